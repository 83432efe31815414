//! The file source over a local folder, with a context that records what it is given.

use super::*;
use arrow::array::{AsArray, Int64Array, StringArray};
use engine_api::{Claimed, Claims, Epoch};
use std::io::Write;

/// Records batches and barriers; a barrier is due after every `due_every` emits.
struct Recorder {
    rows: Vec<(String, i64, String)>,
    barriers: Vec<Positions>,
    emits: usize,
    due_every: usize,
    batch: bool,
    claimed: Positions,
}

impl Recorder {
    fn new(batch: bool) -> Self {
        Recorder {
            rows: Vec::new(),
            barriers: Vec::new(),
            emits: 0,
            due_every: usize::MAX,
            batch,
            claimed: Positions::new(),
        }
    }

    /// Resumes from the last barrier's positions.
    fn resumed(&self, batch: bool) -> Self {
        let mut r = Recorder::new(batch);
        r.claimed = self.barriers.last().cloned().unwrap_or_default();
        r
    }
}

impl Claims for Recorder {
    fn claim(&mut self, partitions: &[PartitionId]) -> Result<Claimed> {
        assert_eq!(partitions, [PartitionId::new("files")]);
        Ok(Claimed {
            positions: self.claimed.clone(),
            resumed: !self.claimed.is_empty(),
        })
    }
}

impl OpenContext for Recorder {
    fn batch_mode(&self) -> bool {
        self.batch
    }
}

impl SourceContext for Recorder {
    fn emit(&mut self, partition: &PartitionId, b: RecordBatch) -> Result<()> {
        assert_eq!(partition.as_str(), "files");
        let files: &StringArray = b.column(0).as_string();
        let lines: &Int64Array = b.column(1).as_primitive();
        let values = b.column(2).as_binary::<i32>();
        for i in 0..b.num_rows() {
            self.rows.push((
                files.value(i).to_string(),
                lines.value(i),
                String::from_utf8_lossy(values.value(i)).into_owned(),
            ));
        }
        self.emits += 1;
        Ok(())
    }
    fn checkpoint_due(&self) -> bool {
        self.emits > 0 && self.emits.is_multiple_of(self.due_every)
    }
    fn barrier(&mut self, positions: Positions) -> Result<Epoch> {
        self.barriers.push(positions);
        Ok(self.barriers.len() as Epoch)
    }
    fn stopping(&self) -> bool {
        false
    }
    fn batch_mode(&self) -> bool {
        self.batch
    }
    fn take_committed(&mut self) -> Option<Positions> {
        None
    }
    fn claims(&self) -> Box<dyn Claims> {
        unimplemented!("not used by the file source")
    }
}

fn folder() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-file-source-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &std::path::Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn append(dir: &std::path::Path, rel: &str, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(rel))
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

fn file_source(dir: &std::path::Path, extra: &str) -> FileSource {
    let text = format!("path = \"file://{}\"\n{extra}", dir.display());
    let cfg: FileSourceConfig = toml::from_str(&text).unwrap();
    cfg.source(&engine_api::testing::build_context("files"))
        .unwrap()
}

fn source(dir: &std::path::Path, extra: &str) -> Box<dyn Source> {
    Box::new(file_source(dir, extra))
}

/// Runs a source to its end on a runtime's blocking thread, as the engine does.
fn run(src: Box<dyn Source>, mut ctx: Recorder) -> Recorder {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let mut src = src;
            src.open(&mut ctx).unwrap();
            src.run(&mut ctx).unwrap();
            ctx
        })
        .await
        .unwrap()
    })
}

fn url(dir: &std::path::Path, rel: &str) -> String {
    format!("file://{}/{rel}", dir.display())
}

#[test]
fn reads_plain_and_gzip_files_in_name_order_with_their_coordinates() {
    let dir = folder();
    write(
        &dir,
        "a.jsonl",
        b"{\"n\": 1}\r\n\n  \n{\"n\": 2}\n{\"n\": 3}",
    );
    write(&dir, "b/c.jsonl.gz", &gzip(b"{\"n\": 4}\nnot json\n"));
    write(&dir, "_SUCCESS", b"");
    write(&dir, ".hidden.jsonl", b"{\"n\": 99}\n");
    write(&dir, "_tmp/x.jsonl", b"{\"n\": 98}\n");
    let got = run(source(&dir, ""), Recorder::new(true));
    let want = vec![
        (url(&dir, "a.jsonl"), 1, "{\"n\": 1}".to_string()),
        (url(&dir, "a.jsonl"), 4, "{\"n\": 2}".to_string()),
        (url(&dir, "a.jsonl"), 5, "{\"n\": 3}".to_string()),
        (url(&dir, "b/c.jsonl.gz"), 1, "{\"n\": 4}".to_string()),
        (url(&dir, "b/c.jsonl.gz"), 2, "not json".to_string()),
    ];
    assert_eq!(got.rows, want);
    // One barrier at the end, with every file read to its end.
    assert_eq!(got.barriers.len(), 1);
    let files = &got.barriers[0][&PartitionId::new("files")]["files"];
    assert_eq!(files["a.jsonl"]["lines"], 5);
    assert_eq!(files["a.jsonl"]["bytes"], 31);
    assert_eq!(files["a.jsonl"]["size"], 31);
    assert_eq!(files["b/c.jsonl.gz"]["lines"], 2);
}

#[test]
fn a_glob_chooses_the_files_and_compression_can_be_forced() {
    let dir = folder();
    write(&dir, "2026-01/a.json", b"1\n");
    write(&dir, "2026-02/b.json", b"2\n");
    write(&dir, "2026-02/b.csv", b"x\n");
    write(&dir, "2026-02/z.data", &gzip(b"3\n"));
    let got = run(
        source(&dir, "glob = \"2026-02/*.json\""),
        Recorder::new(true),
    );
    assert_eq!(got.rows, vec![(url(&dir, "2026-02/b.json"), 1, "2".into())]);
    let got = run(
        source(&dir, "glob = \"*.data\"\ncompression = \"gzip\""),
        Recorder::new(true),
    );
    assert_eq!(got.rows, vec![(url(&dir, "2026-02/z.data"), 1, "3".into())]);
}

#[test]
fn a_rerun_reads_only_new_files_and_the_lines_added_to_read_ones() {
    let dir = folder();
    write(&dir, "a.jsonl", b"1\n2\n");
    write(&dir, "b.jsonl.gz", &gzip(b"3\n"));
    let first = run(source(&dir, ""), Recorder::new(true));
    assert_eq!(first.rows.len(), 3);
    append(&dir, "a.jsonl", b"4\n5\n");
    write(&dir, "c.jsonl", b"6\n");
    let second = run(source(&dir, ""), first.resumed(true));
    assert_eq!(
        second.rows,
        vec![
            (url(&dir, "a.jsonl"), 3, "4".into()),
            (url(&dir, "a.jsonl"), 4, "5".into()),
            (url(&dir, "c.jsonl"), 1, "6".into()),
        ]
    );
    // Nothing new: nothing read.
    let third = run(source(&dir, ""), second.resumed(true));
    assert!(third.rows.is_empty(), "{:?}", third.rows);
    // A gzip file rewritten longer (its old lines first): only its new lines.
    write(&dir, "b.jsonl.gz", &gzip(b"3\n7\n"));
    let fourth = run(source(&dir, ""), third.resumed(true));
    assert_eq!(fourth.rows, vec![(url(&dir, "b.jsonl.gz"), 2, "7".into())]);
}

#[test]
fn barriers_fall_between_batches_with_exactly_what_was_sent() {
    let dir = folder();
    let text: String = (1..=10).map(|i| format!("{i}\n")).collect();
    write(&dir, "a.jsonl", text.as_bytes());
    let mut ctx = Recorder::new(true);
    ctx.due_every = 2;
    let got = run(source(&dir, "batch_lines = 3"), ctx);
    assert_eq!(got.rows.len(), 10);
    // Batches of 3, 3, 3, 1, a barrier due after every second one, and the last at the end.
    let lines: Vec<u64> = got
        .barriers
        .iter()
        .map(|b| {
            b[&PartitionId::new("files")]["files"]["a.jsonl"]["lines"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, vec![6, 10, 10]);
    // Resuming from the first barrier gives exactly the rest.
    let mut resumed = Recorder::new(true);
    resumed.claimed = got.barriers[0].clone();
    let rest = run(source(&dir, ""), resumed);
    let got_lines: Vec<i64> = rest.rows.iter().map(|r| r.1).collect();
    assert_eq!(got_lines, vec![7, 8, 9, 10]);
}

#[test]
fn streaming_mode_holds_an_unterminated_last_line_until_the_file_stops_growing() {
    let dir = folder();
    write(&dir, "a.jsonl", b"1\n2");
    let mut src = file_source(&dir, "");
    let mut ctx = Recorder::new(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            src.open(&mut ctx).unwrap();
            let listed = src.list().unwrap();
            src.read_file(&listed[0], false, &mut ctx).unwrap();
            let first = ctx.rows.len();
            src.read_file(&listed[0], true, &mut ctx).unwrap();
            (first, ctx.rows)
        })
        .await
        .unwrap()
    });
    assert_eq!(got.0, 1, "the unterminated `2` waits");
    assert_eq!(got.1.last().unwrap().2, "2");
}

#[test]
fn config_mistakes_are_one_line_errors() {
    let ctx = engine_api::testing::build_context("files");
    let build = |text: &str| {
        let cfg: FileSourceConfig = toml::from_str(text).unwrap();
        cfg.build(&ctx).err().unwrap().to_string()
    };
    assert!(build("path = \"file:///x\"\nglob = \"a[\"").contains("`glob`: not a glob pattern"));
    assert!(build("path = \"ftp://x/y\"").contains("unsupported URL scheme"));
    assert!(build("path = \"file:///x\"\npoll_interval = \"1ms\"").contains("poll_interval"));
    assert!(build("path = \"file:///x\"\nbatch_lines = 0").contains("batch_lines"));
}
