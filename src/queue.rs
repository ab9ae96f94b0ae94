//! A queue of polls waiting their turn: first come first served, but a poll after a throttle
//! (it had its turn and was refused) joins the polls after throttles at the front, in the
//! order they came.

use std::collections::VecDeque;

/// Polls waiting for something, each represented by what hands it over.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    waiting: VecDeque<T>,
    /// How many at the front joined ahead.
    ahead: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            ahead: 0,
        }
    }
}

impl<T> Queue<T> {
    /// Joins the queue: at the back, or `ahead`, after the others that joined ahead.
    pub(crate) fn join(&mut self, poll: T, ahead: bool) {
        if ahead {
            self.waiting.insert(self.ahead, poll);
            self.ahead += 1;
        } else {
            self.waiting.push_back(poll);
        }
    }

    /// The poll at the front.
    pub(crate) fn front(&self) -> Option<&T> {
        self.waiting.front()
    }

    /// Takes the poll at the front.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let poll = self.waiting.pop_front()?;
        self.ahead = self.ahead.saturating_sub(1);
        Some(poll)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn polls_after_throttles_go_first_in_the_order_they_came() {
        let mut queue = Queue::default();
        queue.join(1, false);
        queue.join(2, false);
        queue.join(3, true);
        queue.join(4, false);
        queue.join(5, true);
        assert_eq!(queue.len(), 5);
        assert_eq!(queue.pop(), Some(3));
        // One ahead is left: a poll joining ahead now goes after it.
        queue.join(6, true);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [5, 6, 1, 2, 4]);
        assert!(queue.is_empty());
        // Emptied, the queue starts over.
        queue.join(7, false);
        queue.join(8, true);
        assert_eq!(queue.front(), Some(&8));
    }
}
