//! Barrier alignment: a node with several inputs handles barrier `n` once every live input has
//! delivered it, holding back what an input sends after its barrier until then. That is what
//! makes a snapshot cover exactly the rows before the barrier on every path.

use super::outputs::Envelope;
use engine_api::Barrier;
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// Tracks which inputs have delivered the current barrier or ended.
pub(crate) struct Alignment {
    barrier: Vec<bool>,
    ended: Vec<bool>,
    held: VecDeque<Envelope>,
    /// The barrier being aligned, once one input has delivered it.
    pending: Option<Barrier>,
}

impl Alignment {
    pub(crate) fn new(inputs: usize) -> Self {
        Alignment {
            barrier: vec![false; inputs],
            ended: vec![false; inputs],
            held: VecDeque::new(),
            pending: None,
        }
    }

    /// The next message to handle: held ones whose input is no longer blocked first.
    pub(crate) async fn next(&mut self, rx: &mut mpsc::Receiver<Envelope>) -> Option<Envelope> {
        if let Some(pos) = self.held.iter().position(|e| !self.barrier[e.slot]) {
            return self.held.remove(pos);
        }
        loop {
            let env = rx.recv().await?;
            if self.barrier[env.slot] {
                self.held.push_back(env);
            } else {
                return Some(env);
            }
        }
    }

    /// Records barrier `b` on `slot`; returns it once every live input has delivered it.
    pub(crate) fn barrier_arrived(&mut self, slot: usize, b: Barrier) -> Option<Barrier> {
        self.barrier[slot] = true;
        self.pending = Some(b);
        self.complete()
    }

    /// Records the end of `slot`. Returns the pending barrier if this end completes its
    /// alignment (the other inputs had all delivered it), and whether every input has ended.
    pub(crate) fn ended(&mut self, slot: usize) -> (Option<Barrier>, bool) {
        self.ended[slot] = true;
        self.barrier[slot] = false;
        let aligned = if self.pending.is_some() {
            self.complete()
        } else {
            None
        };
        (aligned, self.ended.iter().all(|e| *e))
    }

    fn complete(&mut self) -> Option<Barrier> {
        let done = (0..self.barrier.len()).all(|i| self.barrier[i] || self.ended[i]);
        if !done {
            return None;
        }
        self.barrier.iter_mut().for_each(|b| *b = false);
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::Message;

    fn env(slot: usize, msg: Message) -> Envelope {
        Envelope { slot, msg }
    }
    fn barrier(epoch: u64) -> Message {
        Message::Barrier(Barrier { epoch })
    }
    fn rows(n: i64) -> Message {
        use arrow::array::{Int64Array, RecordBatch};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema =
            std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![std::sync::Arc::new(Int64Array::from(vec![n]))])
                .unwrap();
        Message::Batch {
            batch,
            partition: None,
        }
    }
    fn value(m: &Message) -> String {
        match m {
            Message::Batch { batch, .. } => {
                use arrow::array::AsArray;
                let v = batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(0);
                format!("row {v}")
            }
            Message::Barrier(b) => format!("barrier {}", b.epoch),
            Message::Watermark(w) => format!("watermark {w}"),
            Message::EndOfInput => "end".into(),
        }
    }

    /// Feeds `sent` (slot, message) in order and records what the node handles, marking the
    /// moment alignment completes.
    async fn handled(inputs: usize, sent: Vec<(usize, Message)>) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(64);
        for (slot, m) in sent {
            tx.send(env(slot, m)).await.unwrap();
        }
        drop(tx);
        let mut a = Alignment::new(inputs);
        let mut out = Vec::new();
        while let Some(e) = a.next(&mut rx).await {
            let mut line = format!("{}: {}", e.slot, value(&e.msg));
            match e.msg {
                Message::Barrier(b) if a.barrier_arrived(e.slot, b).is_some() => {
                    line.push_str(" (aligned)")
                }
                Message::EndOfInput => {
                    let (aligned, all) = a.ended(e.slot);
                    if let Some(b) = aligned {
                        line.push_str(&format!(" (barrier {} aligned)", b.epoch));
                    }
                    if all {
                        line.push_str(" (all ended)");
                    }
                }
                _ => {}
            }
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn rows_after_a_barrier_wait_until_every_input_delivered_it() {
        let got = handled(
            2,
            vec![
                (0, rows(1)),
                (0, barrier(1)),
                (0, rows(2)), // after input 0's barrier: held
                (1, rows(3)),
                (1, barrier(1)),
                (1, rows(4)),
            ],
        )
        .await;
        assert_eq!(
            got,
            [
                "0: row 1",
                "0: barrier 1",
                "1: row 3",
                "1: barrier 1 (aligned)",
                "0: row 2",
                "1: row 4",
            ]
        );
    }

    #[tokio::test]
    async fn an_ended_input_no_longer_holds_barriers_back() {
        let got = handled(
            2,
            vec![
                (1, barrier(1)),
                (1, rows(5)),
                (0, barrier(1)),
                (0, rows(6)),
                (0, Message::EndOfInput),
                (1, barrier(2)),
                (1, Message::EndOfInput),
            ],
        )
        .await;
        assert_eq!(
            got,
            [
                "1: barrier 1",
                "0: barrier 1 (aligned)",
                "1: row 5",
                "0: row 6",
                "0: end",
                "1: barrier 2 (aligned)",
                "1: end (all ended)",
            ]
        );
    }

    #[tokio::test]
    async fn an_input_that_ends_completes_the_barrier_the_others_delivered() {
        let got = handled(
            2,
            vec![
                (0, barrier(3)),
                (0, rows(1)),
                (1, Message::EndOfInput),
                (0, Message::EndOfInput),
            ],
        )
        .await;
        assert_eq!(
            got,
            [
                "0: barrier 3",
                "1: end (barrier 3 aligned)",
                "0: row 1",
                "0: end (all ended)",
            ]
        );
    }

    #[tokio::test]
    async fn one_input_aligns_at_once() {
        let got = handled(1, vec![(0, rows(1)), (0, barrier(7)), (0, rows(2))]).await;
        assert_eq!(got, ["0: row 1", "0: barrier 7 (aligned)", "0: row 2"]);
    }
}
