//! Hive-style partitioning of a table's files: `col=value/` folders, from columns or from an
//! event-time pattern, as Spark's `partitionBy` writes them and as pyarrow, Spark and DuckDB
//! discover them.
//!
//! - By columns (`partition_by = ["level", "service"]`): each row goes under
//!   `level=<value>/service=<value>/`, and the columns leave the data files (Spark does the same;
//!   readers put them back from the path, and refuse a column that is in both).
//! - By event time (`partition_by = { time = "timestamp", format = "dt=%Y-%m-%d/hr=%H" }`): the
//!   folders come from a timestamp column (or a string one, read as event time reads it), in
//!   UTC, formatted with chrono's `strftime` specifiers; every column stays in the files.
//!
//! Values are escaped as Hive escapes them (`FileUtils.escapePathName`): control characters and
//! `"#%'*/:=?\{[]^` become `%XX`; a null or empty value is `__HIVE_DEFAULT_PARTITION__`.

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, SchemaRef};
use chrono::format::StrftimeItems;
use engine_api::{EngineError, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The value Hive writes for a null (or empty) partition value.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// `partition_by` as written in the pipeline file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PartitionBy {
    /// Columns, outermost folder first.
    Columns(Vec<String>),
    /// Folders from an event-time column: `{ time = "timestamp", format = "dt=%Y-%m-%d" }`.
    Time { time: String, format: String },
}

/// A checked `partition_by`, bound to the input schema.
#[derive(Debug, Clone)]
pub struct Partitioning {
    how: How,
    /// The schema of the data files (the input's, less partition columns).
    file_schema: SchemaRef,
    /// The input columns the data files keep.
    kept: Vec<usize>,
}

#[derive(Debug, Clone)]
enum How {
    Columns(Vec<(String, usize)>),
    Time {
        column: usize,
        /// Per folder level: (name, strftime format).
        levels: Vec<(String, String)>,
        /// The span of time one folder covers at most (see [`bucket_ms`]).
        bucket_ms: i64,
    },
}

impl Partitioning {
    /// Checks `by` against the sink's input schema.
    pub fn new(by: &PartitionBy, input: &SchemaRef) -> Result<Self> {
        match by {
            PartitionBy::Columns(cols) => {
                if cols.is_empty() {
                    return Err(EngineError::invalid(
                        "partition_by",
                        "name at least one column, or remove the setting",
                    ));
                }
                let mut found = Vec::new();
                for c in cols {
                    let i = crate::column_index("partition_by", c, input)?;
                    if found.iter().any(|(n, _)| n == c) {
                        return Err(EngineError::invalid(
                            "partition_by",
                            format!("column `{c}` is named twice"),
                        ));
                    }
                    let t = input.field(i).data_type();
                    if !partitionable(t) {
                        return Err(EngineError::invalid(
                            "partition_by",
                            format!(
                                "column `{c}` is {t}; partition by a string, integer, boolean or date column, or by event time with {{ time = \"<column>\", format = \"dt=%Y-%m-%d\" }}"
                            ),
                        ));
                    }
                    found.push((c.clone(), i));
                }
                if found.len() == input.fields().len() {
                    return Err(EngineError::invalid(
                        "partition_by",
                        "every column would move into the folder names, leaving the files empty",
                    ));
                }
                let kept: Vec<usize> = (0..input.fields().len())
                    .filter(|i| !found.iter().any(|(_, j)| j == i))
                    .collect();
                let file_schema = Arc::new(input.project(&kept)?);
                Ok(Partitioning {
                    how: How::Columns(found),
                    file_schema,
                    kept,
                })
            }
            PartitionBy::Time { time, format } => {
                let column = crate::column_index("partition_by.time", time, input)?;
                if !matches!(
                    input.field(column).data_type(),
                    DataType::Timestamp(..) | DataType::Utf8
                ) {
                    return Err(EngineError::invalid(
                        "partition_by.time",
                        format!(
                            "column `{time}` is {}, not a timestamp (or a string holding one)",
                            input.field(column).data_type()
                        ),
                    ));
                }
                let levels = parse_format(format)?;
                if let Some((name, _)) = levels.iter().find(|(n, _)| input.index_of(n).is_ok()) {
                    return Err(EngineError::invalid(
                        "partition_by.format",
                        format!(
                            "the folder name `{name}` is also a column of the table, which readers refuse; name the level differently, such as dt or event_date"
                        ),
                    ));
                }
                let bucket_ms = levels.iter().map(|(_, f)| bucket_ms(f)).min().unwrap_or(1);
                Ok(Partitioning {
                    how: How::Time {
                        column,
                        levels,
                        bucket_ms,
                    },
                    file_schema: input.clone(),
                    kept: (0..input.fields().len()).collect(),
                })
            }
        }
    }

    /// The schema of the data files.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// The partition columns, outermost first, as a table format declares them: the partition
    /// columns of `input` (the schema given to [`Partitioning::new`]), or one string column per
    /// level of an event-time pattern.
    pub fn columns(&self, input: &SchemaRef) -> Vec<Field> {
        match &self.how {
            How::Columns(cols) => cols
                .iter()
                .map(|(_, i)| input.field(*i).clone().with_nullable(true))
                .collect(),
            How::Time { levels, .. } => levels
                .iter()
                .map(|(name, _)| Field::new(name, DataType::Utf8, true))
                .collect(),
        }
    }

    /// Splits `batch` by folder (`a=1/b=x`), each part with the data files' columns, in the
    /// order of the folders' first rows.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let (folders, of_row) = self.folders(batch)?;
        let projected = batch.project(&self.kept)?;
        if folders.len() == 1 {
            let folder = folders.into_iter().next().expect("one folder");
            return Ok(vec![(folder, projected)]);
        }
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); folders.len()];
        for (row, f) in of_row.iter().enumerate() {
            rows[*f as usize].push(row as u32);
        }
        folders
            .into_iter()
            .zip(rows)
            .map(|(f, rows)| Ok((f, take_record_batch(&projected, &UInt32Array::from(rows))?)))
            .collect()
    }

    /// The distinct folders of `batch`, in the order of their first rows, and each row's index
    /// into them.
    fn folders(&self, batch: &RecordBatch) -> Result<(Vec<String>, Vec<u32>)> {
        let n = batch.num_rows();
        let mut folders = Folders::default();
        match &self.how {
            How::Columns(cols) => {
                let texts = cols
                    .iter()
                    .map(|(_, i)| cast(batch.column(*i), &DataType::Utf8))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                // `name=` of each level, escaped once per batch rather than once per row.
                let prefixes: Vec<String> = cols
                    .iter()
                    .map(|(name, _)| format!("{}=", escape(name)))
                    .collect();
                let mut f = String::new();
                for row in 0..n {
                    f.clear();
                    for (prefix, text) in prefixes.iter().zip(&texts) {
                        let text = text.as_string::<i32>();
                        if !f.is_empty() {
                            f.push('/');
                        }
                        let value = (!text.is_null(row)).then(|| text.value(row));
                        f.push_str(prefix);
                        f.push_str(&value_folder(value));
                    }
                    folders.row(&f);
                }
            }
            How::Time {
                column,
                levels,
                bucket_ms,
            } => {
                // Read as the event time is: a timestamp, or a string in one of the formats
                // event time accepts; what does not parse goes to the default partition.
                let ms = engine_api::time::event_times(batch.column(*column))?;
                // Every time of one bucket (a UTC day for `%Y-%m-%d`) has the same folder, so
                // the folder is formatted once per bucket, not once per row.
                let mut known: HashMap<Option<i64>, u32> = HashMap::new();
                for row in 0..n {
                    let t = (!ms.is_null(row)).then(|| ms.value(row));
                    let bucket = t.map(|t| t.div_euclid(*bucket_ms));
                    if let Some(f) = known.get(&bucket) {
                        folders.of_row.push(*f);
                        continue;
                    }
                    let t = t.and_then(chrono::DateTime::from_timestamp_millis);
                    let folder = levels
                        .iter()
                        .map(|(name, fmt)| {
                            let v = t.map(|t| t.format(fmt).to_string());
                            format!("{}={}", escape(name), value_folder(v.as_deref()))
                        })
                        .collect::<Vec<_>>()
                        .join("/");
                    known.insert(bucket, folders.row(&folder));
                }
            }
        }
        Ok((folders.names, folders.of_row))
    }
}

/// The folders of a batch as they are found.
#[derive(Default)]
struct Folders {
    names: Vec<String>,
    index: HashMap<String, u32>,
    of_row: Vec<u32>,
}

impl Folders {
    /// Records the next row's folder; returns its index.
    fn row(&mut self, folder: &str) -> u32 {
        let i = match self.index.get(folder) {
            Some(i) => *i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(folder.to_string());
                self.index.insert(folder.to_string(), i);
                i
            }
        };
        self.of_row.push(i);
        i
    }
}

/// The longest span of time, in ms, whose instants all format alike with `fmt` in UTC: a day
/// for dates, an hour with `%H`, down to 1 ms for specifiers finer than a second or unknown to
/// this list.
fn bucket_ms(fmt: &str) -> i64 {
    use chrono::format::{Fixed, Item, Numeric};
    const DAY: i64 = 86_400_000;
    StrftimeItems::new(fmt)
        .map(|item| match item {
            Item::Literal(_) | Item::OwnedLiteral(_) | Item::Space(_) | Item::OwnedSpace(_) => DAY,
            Item::Numeric(n, _) => match n {
                Numeric::Year
                | Numeric::YearDiv100
                | Numeric::YearMod100
                | Numeric::IsoYear
                | Numeric::IsoYearDiv100
                | Numeric::IsoYearMod100
                | Numeric::Quarter
                | Numeric::Month
                | Numeric::Day
                | Numeric::WeekFromSun
                | Numeric::WeekFromMon
                | Numeric::IsoWeek
                | Numeric::NumDaysFromSun
                | Numeric::WeekdayFromMon
                | Numeric::Ordinal => DAY,
                Numeric::Hour | Numeric::Hour12 => 3_600_000,
                Numeric::Minute => 60_000,
                Numeric::Second => 1_000,
                _ => 1,
            },
            Item::Fixed(f) => match f {
                Fixed::ShortMonthName
                | Fixed::LongMonthName
                | Fixed::ShortWeekdayName
                | Fixed::LongWeekdayName => DAY,
                Fixed::LowerAmPm | Fixed::UpperAmPm => 3_600_000,
                _ => 1,
            },
            Item::Error => 1,
        })
        .min()
        .unwrap_or(1)
}

/// Types whose values make sensible folder names.
fn partitionable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
    )
}

/// `dt=%Y-%m-%d/hr=%H` as levels; every level is `name=<strftime>`, with valid specifiers.
fn parse_format(format: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: String| EngineError::invalid("partition_by.format", why);
    let mut levels = Vec::new();
    for level in format.split('/') {
        let Some((name, fmt)) = level.split_once('=') else {
            return Err(bad(format!(
                "`{level}` is not name=pattern; write levels such as \"dt=%Y-%m-%d/hr=%H\""
            )));
        };
        if name.is_empty() || fmt.is_empty() {
            return Err(bad(format!(
                "`{level}` needs a name and a pattern, such as dt=%Y-%m-%d"
            )));
        }
        if StrftimeItems::new(fmt).any(|i| matches!(i, chrono::format::Item::Error)) {
            return Err(bad(format!(
                "`{fmt}` has an unknown % specifier; use chrono's strftime ones (%Y, %m, %d, %H, ...)"
            )));
        }
        if !fmt.contains('%') {
            return Err(bad(format!(
                "`{fmt}` has no % specifier, so every row would land in one folder"
            )));
        }
        levels.push((name.to_string(), fmt.to_string()));
    }
    Ok(levels)
}

/// A value's folder name: escaped, or Hive's default partition for null or empty.
fn value_folder(value: Option<&str>) -> String {
    match value {
        None | Some("") => DEFAULT_PARTITION.to_string(),
        Some(v) => escape(v),
    }
}

/// The partition values a folder (`a=1/b=x%3Ay`) names, unescaped, in order; `None` for Hive's
/// default partition.
pub fn values(folder: &str) -> Vec<(String, Option<String>)> {
    folder
        .split('/')
        .filter_map(|level| level.split_once('='))
        .map(|(name, value)| {
            let value = (value != DEFAULT_PARTITION).then(|| unescape(value));
            (unescape(name), value)
        })
        .collect()
}

/// Undoes [`escape`].
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a path segment as Hive's `FileUtils.escapePathName` does.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let needs = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            );
        if needs {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    #[test]
    fn values_are_escaped_as_hive_escapes_them() {
        assert_eq!(escape("plain value-1_2.3"), "plain value-1_2.3");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("100%"), "100%25");
        assert_eq!(escape("k=v:w"), "k%3Dv%3Aw");
        assert_eq!(escape("\"#'*?\\{[]^"), "%22%23%27%2A%3F%5C%7B%5B%5D%5E");
        assert_eq!(escape("tab\there\u{7f}"), "tab%09here%7F");
        assert_eq!(escape("café"), "café", "Hive leaves non-ASCII as it is");
        assert_eq!(value_folder(None), DEFAULT_PARTITION);
        assert_eq!(value_folder(Some("")), DEFAULT_PARTITION);
    }

    #[test]
    fn a_folder_gives_back_the_values_it_was_made_of() {
        for v in [
            "plain",
            "a/b",
            "100%",
            "k=v:w",
            "\"#'*?\\{[]^",
            "tab\there",
            "café",
            "%zz",
        ] {
            assert_eq!(unescape(&escape(v)), v, "{v}");
        }
        let folder = format!("dt=2026-01-01/level={}/k%3D1=a%2Fb", value_folder(None));
        assert_eq!(
            values(&folder),
            [
                ("dt".to_string(), Some("2026-01-01".to_string())),
                ("level".to_string(), None),
                ("k=1".to_string(), Some("a/b".to_string())),
            ]
        );
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("level", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("INFO"),
                    None,
                    Some("a/b"),
                    Some("INFO"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![
                        Some(1_767_225_600_000), // 2026-01-01T00:00:00Z
                        Some(1_767_229_200_000), // 01:00
                        None,
                        Some(1_767_311_999_999), // 2026-01-01T23:59:59.999Z
                    ])
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn ns(b: &RecordBatch) -> Vec<i64> {
        let i = b.schema().index_of("n").unwrap();
        b.column(i)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn by_columns_rows_go_to_their_folders_without_the_column() {
        let b = batch();
        let p =
            Partitioning::new(&PartitionBy::Columns(vec!["level".into()]), &b.schema()).unwrap();
        let parts = p.split(&b).unwrap();
        let got: Vec<(&str, Vec<i64>)> = parts.iter().map(|(f, b)| (f.as_str(), ns(b))).collect();
        assert_eq!(
            got,
            [
                ("level=INFO", vec![1, 4]),
                ("level=__HIVE_DEFAULT_PARTITION__", vec![2]),
                ("level=a%2Fb", vec![3]),
            ]
        );
        for (_, part) in &parts {
            assert_eq!(part.schema(), *p.file_schema());
            assert!(part.schema().index_of("level").is_err());
        }
    }

    #[test]
    fn by_event_time_rows_go_to_their_day_and_hour_and_keep_every_column() {
        let b = batch();
        let by = PartitionBy::Time {
            time: "ts".into(),
            format: "dt=%Y-%m-%d/hr=%H".into(),
        };
        let p = Partitioning::new(&by, &b.schema()).unwrap();
        let got: Vec<(String, Vec<i64>)> = p
            .split(&b)
            .unwrap()
            .into_iter()
            .map(|(f, b)| (f, ns(&b)))
            .collect();
        assert_eq!(
            got,
            [
                ("dt=2026-01-01/hr=00".to_string(), vec![1]),
                ("dt=2026-01-01/hr=01".to_string(), vec![2]),
                (
                    "dt=__HIVE_DEFAULT_PARTITION__/hr=__HIVE_DEFAULT_PARTITION__".to_string(),
                    vec![3]
                ),
                ("dt=2026-01-01/hr=23".to_string(), vec![4]),
            ]
        );
        assert_eq!(p.file_schema(), &b.schema());
    }

    #[test]
    fn folders_formatted_once_per_bucket_equal_each_row_formatted_on_its_own() {
        assert_eq!(bucket_ms("%Y-%m-%d"), 86_400_000);
        assert_eq!(bucket_ms("%Y/%j %a %b"), 86_400_000);
        assert_eq!(bucket_ms("%H"), 3_600_000);
        assert_eq!(bucket_ms("%I%p"), 3_600_000);
        assert_eq!(bucket_ms("%H%M"), 60_000);
        assert_eq!(bucket_ms("%S"), 1_000);
        assert_eq!(
            bucket_ms("%s"),
            1,
            "seconds since the epoch: not cached by day"
        );
        assert_eq!(bucket_ms("%3f"), 1);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        )]));
        let mut rng = fastrand::Rng::with_seed(11);
        let mut next = move || rng.u64(..);
        // Times around midnights, hours and minutes, before and after 1970, and nulls.
        let times: Vec<Option<i64>> = (0..4000)
            .map(|_| {
                let base = [
                    0i64,
                    86_400_000 * 20_000,
                    -86_400_000 * 3,
                    1_767_225_600_000,
                ];
                let t = base[(next() % 4) as usize] + (next() % 400_000_000) as i64 - 200_000_000;
                (next() % 50 != 0).then_some(t)
            })
            .collect();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(
                TimestampMillisecondArray::from(times.clone()).with_timezone("UTC"),
            )],
        )
        .unwrap();
        for format in [
            "dt=%Y-%m-%d",
            "dt=%Y-%m-%d/hr=%H",
            "m=%H:%M",
            "w=%a %U",
            "s=%s",
            "x=%S",
        ] {
            let by = PartitionBy::Time {
                time: "t".into(),
                format: format.into(),
            };
            let p = Partitioning::new(&by, &schema).unwrap();
            let (names, of_row) = p.folders(&b).unwrap();
            for (row, t) in times.iter().enumerate() {
                let expected = format
                    .split('/')
                    .map(|level| {
                        let (name, fmt) = level.split_once('=').unwrap();
                        let v = t
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .map(|t| escape(&t.format(fmt).to_string()))
                            .unwrap_or_else(|| DEFAULT_PARTITION.to_string());
                        format!("{name}={v}")
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                assert_eq!(names[of_row[row] as usize], expected, "{format} at {t:?}");
            }
            let rows: usize = p.split(&b).unwrap().iter().map(|(_, b)| b.num_rows()).sum();
            assert_eq!(rows, times.len());
        }
    }

    #[test]
    fn mistakes_are_config_errors_naming_the_setting() {
        let s = batch().schema();
        let err = |by: PartitionBy| Partitioning::new(&by, &s).unwrap_err().to_string();
        assert!(err(PartitionBy::Columns(vec!["nope".into()])).contains("no column `nope`"));
        assert!(err(PartitionBy::Columns(vec![])).contains("at least one"));
        assert!(err(PartitionBy::Columns(vec!["ts".into()])).contains("by event time"));
        let time = |t: &str, f: &str| PartitionBy::Time {
            time: t.into(),
            format: f.into(),
        };
        assert!(err(time("n", "dt=%Y")).contains("not a timestamp"));
        assert!(
            Partitioning::new(&time("level", "dt=%Y"), &s).is_ok(),
            "a string column"
        );
        assert!(err(time("ts", "%Y-%m-%d")).contains("not name=pattern"));
        assert!(err(time("ts", "dt=%Q")).contains("unknown % specifier"));
        assert!(err(time("ts", "dt=day")).contains("no % specifier"));
    }

    #[test]
    fn partition_by_reads_from_toml_in_both_forms() {
        #[derive(Deserialize)]
        struct T {
            partition_by: PartitionBy,
        }
        let t: T = toml::from_str(r#"partition_by = ["a", "b"]"#).unwrap();
        assert_eq!(
            t.partition_by,
            PartitionBy::Columns(vec!["a".into(), "b".into()])
        );
        let t: T =
            toml::from_str(r#"partition_by = { time = "ts", format = "dt=%Y-%m-%d" }"#).unwrap();
        assert_eq!(
            t.partition_by,
            PartitionBy::Time {
                time: "ts".into(),
                format: "dt=%Y-%m-%d".into()
            }
        );
    }

    #[test]
    fn a_string_time_column_is_read_as_event_time_reads_it() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![
                Some("2026-03-01T23:30:00+02:00"),
                Some("2026-03-01 10:00:00"),
                Some("not a time"),
            ]))],
        )
        .unwrap();
        let by = PartitionBy::Time {
            time: "t".into(),
            format: "dt=%Y-%m-%d/hr=%H".into(),
        };
        let p = Partitioning::new(&by, &schema).unwrap();
        let folders: Vec<String> = p.split(&b).unwrap().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            folders,
            [
                "dt=2026-03-01/hr=21",
                "dt=2026-03-01/hr=10",
                "dt=__HIVE_DEFAULT_PARTITION__/hr=__HIVE_DEFAULT_PARTITION__"
            ]
        );
    }
}
