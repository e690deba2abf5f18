//! A log to verify on each backend's ledger (from `custodian-testkit`), and the tampering an
//! attacker with database access could do.

use std::path::PathBuf;
use std::process::Output;

use custodian_domain::{EventHash, NewEvent};
use custodian_store::ExpectedVersion;
use custodian_testkit::{Backend, Ledger, stream};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, SqliteConnection};

/// What the replay tests do with a ledger besides opening it.
pub trait Log {
    /// Creates the schema and appends `n` events, then closes the writer.
    async fn populate(&self, n: usize);

    /// A direct connection to the database, bypassing the store.
    async fn connect(&self) -> Db;

    /// Runs `custodian-replay verify` on this log.
    async fn run_verify(&self) -> Run;
}

impl Log for Ledger {
    async fn populate(&self, n: usize) {
        let store = self.open().await;
        let streams = ["acme/user/u1", "acme/group/g1", "globex/user/u2"];
        let mut i = 0;
        while i < n {
            // Appends of varying size across several streams and tenants.
            let size = (i % 7 + 1).min(n - i);
            let batch = (i..i + size).map(event).collect();
            store
                .append(
                    &stream(streams[i % streams.len()]),
                    ExpectedVersion::Any,
                    batch,
                )
                .await
                .unwrap();
            i += size;
        }
        store.close().await;
    }

    async fn connect(&self) -> Db {
        match self.backend {
            Backend::Sqlite => Db::Sqlite(
                SqliteConnection::connect_with(
                    &SqliteConnectOptions::new().filename(&self.location),
                )
                .await
                .unwrap(),
            ),
            Backend::Postgres => Db::Postgres(PgConnection::connect(&self.location).await.unwrap()),
        }
    }

    async fn run_verify(&self) -> Run {
        run_binary(&["verify", &self.location]).await
    }
}

/// The event appended as the `i`-th (0-based): position `i + 1`.
pub fn event(i: usize) -> NewEvent {
    NewEvent {
        correlation_id: Some(format!("req_{i}")),
        ..custodian_testkit::event(
            "user.renamed",
            serde_json::json!({ "i": i, "name": format!("user number {i}") }),
        )
    }
}

/// A raw connection to the log's database.
pub enum Db {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Db {
    async fn execute(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Db::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|r| r.rows_affected()),
            Db::Postgres(c) => sqlx::query(sql).execute(c).await.map(|r| r.rows_affected()),
        }
    }

    /// Drops the append-only triggers, as an attacker with database access could, after checking
    /// that they did refuse the rewrite.
    pub async fn drop_append_only_triggers(&mut self) {
        let refused = self
            .execute("UPDATE events SET data = data WHERE position = 1")
            .await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("append-only")),
            "the append-only trigger should refuse an update"
        );
        match self {
            Db::Sqlite(_) => {
                self.execute("DROP TRIGGER events_are_append_only_update")
                    .await
                    .unwrap();
                self.execute("DROP TRIGGER events_are_append_only_delete")
                    .await
                    .unwrap();
            }
            Db::Postgres(_) => {
                self.execute("DROP TRIGGER events_are_append_only ON events")
                    .await
                    .unwrap();
            }
        };
    }

    /// The stored `data` text of `position`.
    pub async fn data(&mut self, position: i64) -> String {
        match self {
            Db::Sqlite(c) => sqlx::query_scalar("SELECT data FROM events WHERE position = ?")
                .bind(position)
                .fetch_one(c)
                .await
                .unwrap(),
            Db::Postgres(c) => sqlx::query_scalar("SELECT data FROM events WHERE position = $1")
                .bind(position)
                .fetch_one(c)
                .await
                .unwrap(),
        }
    }

    /// Overwrites the stored `data` text of `position`.
    pub async fn set_data(&mut self, position: i64, data: &str) {
        let n = match self {
            Db::Sqlite(c) => sqlx::query("UPDATE events SET data = ? WHERE position = ?")
                .bind(data)
                .bind(position)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
            Db::Postgres(c) => sqlx::query("UPDATE events SET data = $1 WHERE position = $2")
                .bind(data)
                .bind(position)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(n, 1, "no row at position {position}");
    }

    /// Overwrites the stored `hash` of `position`.
    pub async fn set_hash(&mut self, position: i64, hash: &[u8]) {
        self.set_bytes("hash", position, hash).await;
    }

    /// Overwrites the stored `prev_hash` of `position`.
    pub async fn set_prev_hash(&mut self, position: i64, hash: &[u8]) {
        self.set_bytes("prev_hash", position, hash).await;
    }

    /// Overwrites the byte column `column` of `position`.
    async fn set_bytes(&mut self, column: &str, position: i64, value: &[u8]) {
        let n = match self {
            Db::Sqlite(c) => sqlx::query(&format!(
                "UPDATE events SET {column} = ? WHERE position = ?"
            ))
            .bind(value)
            .bind(position)
            .execute(c)
            .await
            .unwrap()
            .rows_affected(),
            Db::Postgres(c) => sqlx::query(&format!(
                "UPDATE events SET {column} = $1 WHERE position = $2"
            ))
            .bind(value)
            .bind(position)
            .execute(c)
            .await
            .unwrap()
            .rows_affected(),
        };
        assert_eq!(n, 1, "no row at position {position}");
    }

    /// Deletes the row at `position`.
    pub async fn delete(&mut self, position: i64) {
        let n = self
            .execute(&format!("DELETE FROM events WHERE position = {position}"))
            .await
            .unwrap();
        assert_eq!(n, 1, "no row at position {position}");
    }

    /// Deletes every row from `position` on: the log's tail is cut.
    pub async fn delete_from(&mut self, position: i64) {
        self.execute(&format!("DELETE FROM events WHERE position >= {position}"))
            .await
            .unwrap();
    }

    /// Swaps the rows at positions `a` and `b`.
    pub async fn swap(&mut self, a: i64, b: i64) {
        for sql in [
            format!("UPDATE events SET position = -1 WHERE position = {a}"),
            format!("UPDATE events SET position = {a} WHERE position = {b}"),
            format!("UPDATE events SET position = {b} WHERE position = -1"),
        ] {
            assert_eq!(self.execute(&sql).await.unwrap(), 1, "{sql}");
        }
    }

    /// Inserts a copy of the row at `position` right after it (with its own id), moving every
    /// later row up by one.
    pub async fn duplicate_after(&mut self, position: i64) {
        // A SQLite log also keys each row by its stream (the store's migration 0004).
        let (new_id, key) = match self {
            Db::Sqlite(_) => ("randomblob(16)", ", stream_key"),
            Db::Postgres(_) => ("gen_random_uuid()", ""),
        };
        for sql in [
            format!("UPDATE events SET position = -position WHERE position > {position}"),
            "UPDATE events SET position = 1 - position WHERE position < 0".to_owned(),
            format!(
                "INSERT INTO events (position, id, stream, version, type, schema, tenant, \
                 actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash{key}) \
                 SELECT position + 1, {new_id}, stream, version + 1000000, type, schema, tenant, \
                 actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash{key} \
                 FROM events WHERE position = {position}"
            ),
        ] {
            self.execute(&sql).await.unwrap();
        }
    }

    /// Keeps a copy of every row, for [`Db::restore`].
    pub async fn snapshot(&mut self) {
        self.execute("DROP TABLE IF EXISTS events_saved")
            .await
            .unwrap();
        self.execute("CREATE TABLE events_saved AS SELECT * FROM events")
            .await
            .unwrap();
    }

    /// Puts back the rows [`Db::snapshot`] kept.
    pub async fn restore(&mut self) {
        self.execute("DELETE FROM events").await.unwrap();
        self.execute("INSERT INTO events SELECT * FROM events_saved")
            .await
            .unwrap();
        self.execute("DROP TABLE events_saved").await.unwrap();
    }

    /// Rewrites the chain from `position` to the head, as an attacker who changed that record
    /// would: every `prev_hash` and `hash` recomputed, so the chain alone verifies again.
    pub async fn rechain_from(&mut self, fixture: &Ledger, position: u64) {
        let store = fixture.open_read_only().await;
        let records = store.read_all(position - 1, usize::MAX).await.unwrap();
        store.close().await;
        let mut prev = records[0].hash;
        for record in &records[1..] {
            let mut forged = record.clone();
            forged.prev_hash = prev;
            let hash = forged.compute_hash().unwrap();
            let p = i64::try_from(record.position).unwrap();
            self.set_hash(p, &hash.0).await;
            self.set_prev_hash(p, &prev.0).await;
            prev = hash;
        }
    }

    /// Changes exactly one byte of `position`'s `data`, inside a string value, so that it is still
    /// valid JSON and only the hash can tell.
    pub async fn flip_one_data_byte(&mut self, position: i64) {
        let before = self.data(position).await;
        let after = flip_byte_in_string_value(&before);
        self.set_data(position, &after).await;
    }

    /// Forges `position`'s `hash` to match its (tampered) contents, as read back through the store.
    pub async fn rehash(&mut self, fixture: &Ledger, position: u64) -> EventHash {
        let store = fixture.open_read_only().await;
        let record = store.read_all(position, 1).await.unwrap().remove(0);
        store.close().await;
        assert_eq!(record.position, position);
        let forged = record.compute_hash().unwrap();
        assert_ne!(forged, record.hash, "the record was not tampered with");
        self.set_hash(i64::try_from(position).unwrap(), &forged.0)
            .await;
        forged
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(c) => c.close().await.unwrap(),
            Db::Postgres(c) => c.close().await.unwrap(),
        }
    }
}

/// Turns the first `u` of the `name` string value into `v`; checks that exactly one byte changed
/// and that the result is still JSON.
pub fn flip_byte_in_string_value(data: &str) -> String {
    let start = data.find(r#""name":""#).expect("a name string value") + r#""name":""#.len();
    let offset = start + data[start..].find('u').expect("a u in the name");
    let mut bytes = data.as_bytes().to_vec();
    bytes[offset] = b'v';
    let after = String::from_utf8(bytes).unwrap();
    let differing = data.bytes().zip(after.bytes()).filter(|(a, b)| a != b);
    assert_eq!(differing.count(), 1);
    assert_eq!(data.len(), after.len());
    let parsed: serde_json::Value = serde_json::from_str(&after).expect("still valid JSON");
    assert!(parsed["name"].as_str().unwrap().starts_with("vser number"));
    after
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `custodian-replay` with `args`, stdout and stderr captured (not terminals).
pub async fn run_binary(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian-replay"))
        .args(args)
        .output()
        .await
        .unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A path in a fresh temporary directory that does not exist, nor does its parent.
pub fn missing_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("not-there").join("custodian.db")
}

/// Runs the built `custodian-replay` with `args` and `input` on its stdin.
pub async fn run_binary_with_input(args: &[&str], input: &str) -> Run {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian-replay"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().await.unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}
