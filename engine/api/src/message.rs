use arrow::record_batch::RecordBatch;

/// A checkpoint epoch. Epoch `n` covers everything the source read after barrier `n - 1`.
pub type Epoch = u64;

/// What actors send each other over their bounded mailboxes.
#[derive(Debug, Clone)]
pub enum Message {
    /// A micro-batch of rows.
    Batch(RecordBatch),
    /// A checkpoint barrier: everything before it belongs to `epoch`.
    Barrier(Barrier),
    /// Event time (milliseconds since the Unix epoch) below which no more rows are expected.
    Watermark(i64),
    /// The input is finished (batch mode, or a clean stop); flush and pass it on.
    EndOfInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: Epoch,
}
