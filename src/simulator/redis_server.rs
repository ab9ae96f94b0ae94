//! A real `redis-server` process on loopback, for the shared budget's tests and benchmarks.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` started on a free loopback port, with nothing saved to disk. It is killed
/// (SIGKILL) when dropped, and can be killed and started again on the same port.
///
/// [`RedisServer::start`] gives `None`, saying why on stderr, when the `redis-server` program
/// is not installed, unless `IOTDA_REQUIRE_REDIS` is set (as continuous integration does):
/// then it panics, so that tests needing Redis never pass by skipping.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Whether the port speaks TLS (and no port speaks plain Redis).
    tls: bool,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or says why not (see the type's docs).
    ///
    /// # Panics
    /// If the server does not answer within 5 s, or it is missing while `IOTDA_REQUIRE_REDIS`
    /// is set.
    #[must_use]
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with more arguments for `redis-server`, e.g.
    /// `["--requirepass", "secret"]`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(args: &[&str]) -> Option<Self> {
        Self::start_on(args, false)
    }

    /// As [`start`](Self::start), speaking TLS only, with the certificate chain and the
    /// private key in the PEM files given; clients are not asked for certificates. Its
    /// [`url`](Self::url) is `rediss://`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_tls(certificate: &std::path::Path, key: &std::path::Path) -> Option<Self> {
        let (certificate, key) = (certificate.to_string_lossy(), key.to_string_lossy());
        let args = [
            "--tls-cert-file",
            &certificate,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
        ];
        Self::start_on(&args, true)
    }

    fn start_on(args: &[&str], tls: bool) -> Option<Self> {
        let present = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            assert!(
                std::env::var_os("IOTDA_REQUIRE_REDIS").is_none(),
                "redis-server is not installed, and IOTDA_REQUIRE_REDIS is set"
            );
            eprintln!("skipped: redis-server is not installed (Debian: apt install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            port,
            tls,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// The server's URL, `redis://127.0.0.1:PORT/0` (`rediss://` with TLS).
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs), and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// If it does not within 5 s.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let ports: &[&str] = if self.tls {
            &["--port", "0", "--tls-port", &port]
        } else {
            &["--port", &port]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "redis-server did not listen on {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
