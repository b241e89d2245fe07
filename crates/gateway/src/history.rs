//! Recognition history in SQLite (`[history] path = …`): one row per ASR result, written by one
//! writer thread in batched transactions, read on the blocking pool through separate connections
//! (WAL mode, so reads never wait for the writer).
//!
//! A request's row is committed before its response is sent, so a client that reads the history
//! right after a transcription sees it. Beyond `max_rows` the oldest rows are deleted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, params_from_iter};
use serde::Serialize;
use tokio::sync::oneshot;

/// One recognition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Row id (assigned by the database; 0 before insert).
    pub id: i64,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Route name.
    pub route: String,
    /// Slot name.
    pub slot: String,
    /// Model version that produced it.
    pub version: String,
    /// Model folder.
    pub model: String,
    /// Uploaded file name, or `stream`.
    pub file_name: String,
    /// Audio duration, seconds.
    pub duration_s: f64,
    /// Language of the model (`en`, `zh-en`, … when known).
    pub language: String,
    /// Recognised text.
    pub text: String,
    /// Time to the result, milliseconds.
    pub latency_ms: f64,
    /// The request id.
    pub request_id: String,
}

/// Filters of a history query.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this route.
    pub route: Option<String>,
    /// Only this slot.
    pub slot: Option<String>,
    /// Only this model version.
    pub version: Option<String>,
    /// Only rows whose text or file name contains this (case-insensitive for ASCII).
    pub text: Option<String>,
    /// Only rows at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// At most this many rows, newest first.
    pub limit: usize,
}

enum Msg {
    Insert(Box<Row>, oneshot::Sender<()>),
}

/// An open history database.
pub struct History {
    path: PathBuf,
    tx: Mutex<mpsc::Sender<Msg>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recognitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    route TEXT NOT NULL,
    slot TEXT NOT NULL,
    version TEXT NOT NULL,
    model TEXT NOT NULL,
    file_name TEXT NOT NULL,
    duration_s REAL NOT NULL,
    language TEXT NOT NULL,
    text TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recognitions_route_time ON recognitions (route, time_ms);
";

fn open_conn(path: &Path, write: bool) -> rusqlite::Result<Connection> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let c = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.busy_timeout(Duration::from_secs(5))?;
    if write {
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.execute_batch(SCHEMA)?;
    }
    Ok(c)
}

/// The history at `path`, shared by every slot that names it (one writer per file).
pub fn shared(path: &Path, max_rows: u64) -> anyhow::Result<Arc<History>> {
    static OPEN: Mutex<Option<HashMap<PathBuf, Weak<History>>>> = Mutex::new(None);
    let mut open = OPEN
        .lock()
        .map_err(|_| anyhow::anyhow!("history registry poisoned"))?;
    let map = open.get_or_insert_with(HashMap::new);
    if let Some(h) = map.get(path).and_then(Weak::upgrade) {
        return Ok(h);
    }
    let h = Arc::new(History::open(path, max_rows)?);
    map.insert(path.to_path_buf(), Arc::downgrade(&h));
    Ok(h)
}

impl History {
    /// Opens (creating) the database and starts its writer thread.
    pub fn open(path: &Path, max_rows: u64) -> anyhow::Result<History> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("history folder {}: {e}", dir.display()))?;
        }
        let conn = open_conn(path, true)
            .map_err(|e| anyhow::anyhow!("history database {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("switchyard-history".into())
            .spawn(move || writer(conn, rx, max_rows))?;
        tracing::info!(path = %path.display(), "recognition history open");
        Ok(History {
            path: path.to_path_buf(),
            tx: Mutex::new(tx),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a row; the receiver resolves once it is committed.
    pub fn record(&self, row: Row) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        if let Ok(tx) = self.tx.lock()
            && tx.send(Msg::Insert(Box::new(row), done)).is_err()
        {
            tracing::error!("the history writer has stopped; a recognition was not stored");
        }
        rx
    }

    /// Rows matching `q`, newest first. Blocking.
    pub fn query(&self, q: &Query) -> anyhow::Result<Vec<Row>> {
        let conn = open_conn(&self.path, false)?;
        let mut sql = String::from(
            "SELECT id, time_ms, route, slot, version, model, file_name, duration_s, language, text, \
             latency_ms, request_id FROM recognitions WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(r) = &q.route {
            sql.push_str(" AND route = ?");
            args.push(r.clone().into());
        }
        if let Some(s) = &q.slot {
            sql.push_str(" AND slot = ?");
            args.push(s.clone().into());
        }
        if let Some(v) = &q.version {
            sql.push_str(" AND version = ?");
            args.push(v.clone().into());
        }
        if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
            // A LIKE pattern with the user's wildcards escaped.
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            sql.push_str(" AND (text LIKE ? ESCAPE '\\' OR file_name LIKE ? ESCAPE '\\')");
            let pattern = format!("%{escaped}%");
            args.push(pattern.clone().into());
            args.push(pattern.into());
        }
        if let Some(t) = q.since_ms {
            sql.push_str(" AND time_ms >= ?");
            args.push(t.into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push((q.limit as i64).into());
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            let time_ms: i64 = r.get(1)?;
            Ok(Row {
                id: r.get(0)?,
                time: rfc3339(time_ms),
                time_ms,
                route: r.get(2)?,
                slot: r.get(3)?,
                version: r.get(4)?,
                model: r.get(5)?,
                file_name: r.get(6)?,
                duration_s: r.get(7)?,
                language: r.get(8)?,
                text: r.get(9)?,
                latency_ms: r.get(10)?,
                request_id: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Msg>, max_rows: u64) {
    let mut since_trim = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO recognitions (time_ms, route, slot, version, model, file_name, \
                     duration_s, language, text, latency_ms, request_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for Msg::Insert(r, _) in &batch {
                    stmt.execute(rusqlite::params![
                        r.time_ms,
                        r.route,
                        r.slot,
                        r.version,
                        r.model,
                        r.file_name,
                        r.duration_s,
                        r.language,
                        r.text,
                        r.latency_ms,
                        r.request_id
                    ])?;
                }
            }
            since_trim += batch.len() as u64;
            if since_trim >= 1000 {
                since_trim = 0;
                tx.execute(
                    "DELETE FROM recognitions WHERE id <= (SELECT MAX(id) FROM recognitions) - ?1",
                    [max_rows as i64],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = &result {
            tracing::error!(error = %e, rows = batch.len(), "could not store recognitions");
        }
        for Msg::Insert(_, done) in batch {
            let _ = done.send(());
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses `since`: RFC 3339 (`2026-11-21T10:00:00Z`) or seconds since the epoch.
pub fn parse_since(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return Some((secs * 1000.0) as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

/// The rows as CSV (RFC 4180), with a header line.
pub fn to_csv(rows: &[Row]) -> String {
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let mut out = String::from(
        "id,time,route,slot,version,model,file_name,duration_s,language,text,latency_ms,request_id\r\n",
    );
    for r in rows {
        let cells = [
            r.id.to_string(),
            r.time.clone(),
            r.route.clone(),
            r.slot.clone(),
            r.version.clone(),
            r.model.clone(),
            r.file_name.clone(),
            format!("{:.3}", r.duration_s),
            r.language.clone(),
            r.text.clone(),
            format!("{:.1}", r.latency_ms),
            r.request_id.clone(),
        ];
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, c);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> Row {
        Row {
            id: 0,
            time: String::new(),
            time_ms: now_ms(),
            route: "asr".into(),
            slot: if i.is_multiple_of(2) { "a" } else { "b" }.into(),
            version: "1".into(),
            model: "m".into(),
            file_name: format!("f{i}.wav"),
            duration_s: 1.5,
            language: "en".into(),
            text: format!("hello, \"world\" {i}"),
            latency_ms: 12.0,
            request_id: format!("r{i}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_lose_nothing_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/history.db");
        {
            let h = Arc::new(History::open(&path, 1_000_000).expect("open"));
            let mut tasks = Vec::new();
            for t in 0..8 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..50 {
                        h.record(row(t * 50 + i)).await.expect("committed");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
        }
        let h = History::open(&path, 1_000_000).expect("reopen");
        let all = h
            .query(&Query {
                limit: 10_000,
                ..Query::default()
            })
            .expect("query");
        assert_eq!(all.len(), 400);
        let mut names: Vec<_> = all.iter().map(|r| r.file_name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 400);
        let b = h
            .query(&Query {
                slot: Some("b".into()),
                limit: 10_000,
                ..Query::default()
            })
            .expect("query");
        assert_eq!(b.len(), 200);
        assert!(b.iter().all(|r| r.slot == "b"));
        let future = h
            .query(&Query {
                since_ms: Some(now_ms() + 60_000),
                limit: 10,
                ..Query::default()
            })
            .expect("query");
        assert!(future.is_empty());
        // Text search: a substring of text or file name, the user's `%`/`_` taken literally.
        let q = |text: &str, version: Option<&str>| {
            h.query(&Query {
                text: Some(text.into()),
                version: version.map(String::from),
                limit: 10_000,
                ..Query::default()
            })
            .expect("query")
        };
        assert_eq!(q("world\" 123", None).len(), 1);
        assert_eq!(q("f12", None).len(), 11, "f12.wav and f120–f129.wav");
        assert_eq!(q("HELLO", None).len(), 400, "ASCII case-insensitive");
        assert!(q("%", None).is_empty());
        assert!(q("_", None).is_empty());
        assert_eq!(q("f12", Some("1")).len(), 11);
        assert!(q("f12", Some("2")).is_empty());
        let csv = to_csv(&all[..1]);
        assert!(csv.contains("\"hello, \"\"world\"\""), "{csv}");
    }

    #[test]
    fn since_parses_both_forms() {
        assert_eq!(parse_since("1.5"), Some(1500));
        assert_eq!(parse_since("1970-01-01T00:00:02Z"), Some(2000));
        assert_eq!(parse_since("yesterday"), None);
    }
}
