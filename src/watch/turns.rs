//! The turns of many waits to have a request in flight: a counting semaphore whose queue is
//! first come first served, except that polls after throttles go first.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::queue::Queue;

/// At most a number of requests in flight together, over many waits.
pub(crate) struct Turns {
    state: Mutex<State>,
}

struct State {
    /// Turns nobody holds.
    free: usize,
    /// Polls waiting for a turn; some may have stopped waiting (their receiver is gone).
    waiting: Queue<oneshot::Sender<Turn>>,
}

/// One request's turn, given back when dropped.
pub(crate) struct Turn(Option<Arc<Turns>>);

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Turns")
            .field("free", &state.free)
            .field("waiting", &state.waiting.len())
            .finish()
    }
}

impl Turns {
    /// `limit` turns, at least one.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: limit.max(1),
                waiting: Queue::default(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain numbers and a queue: a panic elsewhere cannot leave them half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn: after every poll queued before, or when `ahead`, before all but
    /// those that came ahead too.
    pub(crate) async fn take(self: Arc<Self>, ahead: bool) -> Turn {
        let given = {
            let mut state = self.state();
            if state.free > 0 {
                state.free -= 1;
                return Turn(Some(self.clone()));
            }
            let (sender, given) = oneshot::channel();
            state.waiting.join(sender, ahead);
            given
        };
        // A sender is only dropped after it sent, and the queue holds the senders while the
        // turns (and this future's `self`) are alive.
        given.await.unwrap_or(Turn(None))
    }

    /// Hands a turn given back to the first poll still waiting, or frees it.
    fn give_back(self: Arc<Self>) {
        let mut turn = Turn(Some(self.clone()));
        let mut state = self.state();
        while let Some(next) = state.waiting.pop() {
            match next.send(turn) {
                Ok(()) => return,
                // That poll stopped waiting: the turn goes to the next.
                Err(back) => turn = back,
            }
        }
        // Disarmed, so that it does not come back here under the lock.
        turn.0 = None;
        state.free += 1;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.0.take() {
            turns.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `turns` hands out a turn at once.
    async fn free(turns: &Arc<Turns>) -> Option<Turn> {
        tokio::time::timeout(Duration::from_millis(1), turns.clone().take(false))
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn turns_go_in_order_and_a_poll_asking_ahead_goes_first() {
        let turns = Turns::new(1);
        let held = turns.clone().take(false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waits = Vec::new();
        for (name, ahead) in [("first", false), ("second", false), ("throttled", true)] {
            let (turns, order) = (turns.clone(), order.clone());
            waits.push(tokio::spawn(async move {
                let turn = turns.take(ahead).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(turn);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for wait in waits {
            wait.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["throttled", "first", "second"]);
        assert!(free(&turns).await.is_some(), "the one turn came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_stops_waiting_passes_its_turn_on() {
        let turns = Turns::new(2);
        let (a, b) = (
            turns.clone().take(false).await,
            turns.clone().take(false).await,
        );
        assert!(free(&turns).await.is_none(), "both turns are held");
        // Two polls queue, and the first stops waiting.
        let gone = tokio::spawn(turns.clone().take(false));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(turns.clone().take(false));
        tokio::task::yield_now().await;
        gone.abort();
        assert!(gone.await.is_err());
        drop(a);
        let turn = tokio::time::timeout(Duration::from_millis(1), waiting)
            .await
            .expect("the turn passed over the poll gone to the one waiting")
            .unwrap();
        drop((b, turn));
        // Both back: two at once, and no more.
        let (c, d) = (free(&turns).await, free(&turns).await);
        assert!(c.is_some() && d.is_some());
        assert!(free(&turns).await.is_none());
    }

    #[tokio::test]
    async fn as_many_turns_as_a_usize_counts() {
        let turns = Turns::new(usize::MAX);
        let held: Vec<Turn> =
            futures::future::join_all((0..1000).map(|_| turns.clone().take(false))).await;
        assert_eq!(held.len(), 1000);
        assert_eq!(turns.state().free, usize::MAX - 1000);
        drop(held);
        assert_eq!(turns.state().free, usize::MAX);
    }
}
