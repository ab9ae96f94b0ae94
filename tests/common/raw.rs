//! A bare HTTP/1.1 server on loopback for faults that a mock server cannot produce: a
//! connection reset in the middle of a body, and a port that stops listening.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub enum Act {
    /// Answers 200 with this JSON, and closes the connection.
    Json(String),
    /// Sends headers promising 500 bytes, 20 of them, then resets the connection.
    ResetMidBody,
    /// Stops listening: later connections are refused.
    Refuse,
}

async fn read_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Serves `acts` in order, one per connection; the last one repeats unless it is `Refuse`.
pub async fn serve(acts: Vec<Act>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut acts = acts.into_iter().peekable();
        while let Some(act) = acts.next() {
            if let Act::Refuse = act {
                return;
            }
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            read_head(&mut stream).await;
            match &act {
                Act::Json(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                Act::ResetMidBody => {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"status\":\"RUNNING\",";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.flush().await;
                    // Linger zero: closing sends a reset, not an orderly end.
                    let _ =
                        socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
                    drop(stream);
                }
                Act::Refuse => unreachable!(),
            }
            if acts.peek().is_none() {
                // Keep answering like the last act.
                acts = vec![act].into_iter().peekable();
            }
        }
    });
    addr
}
