use arrow::record_batch::RecordBatch;

/// A checkpoint epoch. Epoch `n` covers everything the source read after barrier `n - 1`.
pub type Epoch = u64;

/// A source partition (Kafka: `topic/partition`): the unit of ordering, of event time and of
/// ownership when several processes share a topic.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PartitionId(std::sync::Arc<str>);

impl PartitionId {
    pub fn new(id: impl AsRef<str>) -> Self {
        PartitionId(id.as_ref().into())
    }

    /// A Kafka partition: `topic/partition`.
    pub fn kafka(topic: &str, partition: i32) -> Self {
        PartitionId(format!("{topic}/{partition}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What actors send each other over their bounded mailboxes.
#[derive(Debug, Clone)]
pub enum Message {
    /// A micro-batch of rows. `partition` is the source partition every row came from; `None`
    /// for rows an operator derived from several (an aggregate's output).
    Batch {
        batch: RecordBatch,
        partition: Option<PartitionId>,
    },
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

/// How a node's output relates to its result table, as in Spark Structured Streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Rows are final once emitted: plain records, or windows closed by the watermark.
    Append,
    /// At each trigger, the result rows that changed.
    Update,
    /// At each trigger, the whole result table.
    Complete,
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputMode::Append => "append",
            OutputMode::Update => "update",
            OutputMode::Complete => "complete",
        })
    }
}

/// The schema of the records a Kafka source emits: the contract between the `kafka` source and
/// the operators that read its `value` column (such as `json_parse`).
pub fn kafka_record_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "kafka_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Binary, true),
    ]))
}
