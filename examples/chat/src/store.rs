//! The chat's database: SQLite in one file, so history, room memberships, messages waiting for
//! offline users and who is online survive a restart, and several chat processes on one
//! machine (a cluster's nodes) can share them.
//!
//! Every call runs on tokio's blocking pool, one at a time per process; SQLite's WAL mode and a
//! busy timeout let other processes work on the same file meanwhile (worker processes, other
//! nodes). Transactions that read then write take the write lock first (`IMMEDIATE`): one
//! that upgraded a read lock would fail at once, without waiting, when another process writes.

/// How long a statement waits for another process's write lock.
const BUSY_WAIT: Duration = Duration::from_secs(5);

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// Messages kept waiting for one offline user at most; more are refused.
pub const MAX_WAITING: usize = 1_000;
/// Rooms a user may be a member of.
pub const MAX_ROOMS_PER_USER: usize = 32;

/// A room message, as stored and as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Increasing over the whole database.
    pub id: i64,
    /// The room it was said in.
    pub room: String,
    /// Who said it.
    pub from: String,
    /// What was said.
    pub text: String,
    /// When, in milliseconds since the Unix epoch.
    pub ts: i64,
}

/// What became of a direct message for someone offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Kept for their next login.
    Yes,
    /// Nobody of that name ever logged in: nothing is kept for names that may never come.
    NoSuchUser,
    /// They have [`MAX_WAITING`] messages waiting already.
    Full,
}

/// A direct message kept for a user who was offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Who sent it.
    pub from: String,
    /// What was sent.
    pub text: String,
    /// When, in milliseconds since the Unix epoch.
    pub ts: i64,
}

type Result<T> = rusqlite::Result<T>;

/// The database, shared by the hook, the listeners and the web page's server.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
CREATE TABLE IF NOT EXISTS members (
    room TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (room, user));
CREATE INDEX IF NOT EXISTS members_by_user ON members (user);
CREATE TABLE IF NOT EXISTS waiting (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS waiting_by_recipient ON waiting (recipient, id);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS online (
    user TEXT PRIMARY KEY, node TEXT NOT NULL, session TEXT NOT NULL);
";

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        conn.busy_timeout(BUSY_WAIT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        Ok(tokio::task::spawn_blocking(move || f(&mut conn.lock())).await??)
    }

    /// The token secret kept in the database, made from 32 random bytes on first use, so that
    /// tokens outlive a restart and every process on this file accepts them.
    pub fn secret(&self) -> anyhow::Result<Vec<u8>> {
        let conn = self.conn.lock();
        let get = |c: &Connection| {
            c.query_row("SELECT value FROM settings WHERE key = 'secret'", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
        };
        if let Some(s) = get(&conn)? {
            return Ok(s);
        }
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
            .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for the token secret: {e}"))?;
        // Another process may have made one meanwhile: the first one stays.
        conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('secret', ?1)",
            params![secret.to_vec()],
        )?;
        Ok(get(&conn)?.unwrap_or_else(|| secret.to_vec()))
    }

    /// Marks everyone this node had online as gone (at start, after a crash).
    pub fn forget_node(&self, node: &str) -> anyhow::Result<usize> {
        Ok(self
            .conn
            .lock()
            .execute("DELETE FROM online WHERE node = ?1", params![node])?)
    }

    /// Records `user` online in `session` (and as a user from now on, if new); true if they
    /// were not online before.
    pub async fn set_online(&self, user: &str, node: &str, session: &str) -> anyhow::Result<bool> {
        let (user, node, session) = (user.to_string(), node.to_string(), session.to_string());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO users (name, since) VALUES (?1, strftime('%s', 'now'))",
                [&user],
            )?;
            let before: Option<String> = tx
                .query_row("SELECT node FROM online WHERE user = ?1", [&user], |r| {
                    r.get(0)
                })
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO online (user, node, session) VALUES (?1, ?2, ?3)",
                params![user, node, session],
            )?;
            tx.commit()?;
            Ok(before.is_none())
        })
        .await
    }

    /// Ends `session` of `user`; true if that was the session on record (a newer login of the
    /// same user, which replaced it, keeps them online).
    pub async fn set_offline(&self, user: &str, session: &str) -> anyhow::Result<bool> {
        let (user, session) = (user.to_string(), session.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM online WHERE user = ?1 AND session = ?2",
                params![user, session],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Everyone online, by name.
    pub async fn online(&self) -> anyhow::Result<Vec<String>> {
        self.call(|c| strings(c, "SELECT user FROM online ORDER BY user", []))
            .await
    }

    /// Stores a room message and returns it with its id.
    pub async fn save(
        &self,
        room: &str,
        from: &str,
        text: &str,
        ts: i64,
    ) -> anyhow::Result<Message> {
        let (room, from, text) = (room.to_string(), from.to_string(), text.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO messages (room, sender, body, ts) VALUES (?1, ?2, ?3, ?4)",
                params![room, from, text, ts],
            )?;
            let id = c.last_insert_rowid();
            Ok(Message {
                id,
                room,
                from,
                text,
                ts,
            })
        })
        .await
    }

    /// The last `n` messages of `room`, oldest first.
    pub async fn history(&self, room: &str, n: usize) -> anyhow::Result<Vec<Message>> {
        let room = room.to_string();
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, sender, body, ts FROM messages WHERE room = ?1 \
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut rows = st
                .query_map(params![room, n as i64], |r| {
                    Ok(Message {
                        id: r.get(0)?,
                        room: room.clone(),
                        from: r.get(1)?,
                        text: r.get(2)?,
                        ts: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// Makes `user` a member of `room`; false if they are in too many rooms already.
    pub async fn join(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        let (room, user) = (room.to_string(), user.to_string());
        self.call(move |c| {
            let count: i64 = c.query_row(
                "SELECT COUNT(*) FROM members WHERE user = ?1 AND room != ?2",
                params![user, room],
                |r| r.get(0),
            )?;
            if count as usize >= MAX_ROOMS_PER_USER {
                return Ok(false);
            }
            c.execute(
                "INSERT OR IGNORE INTO members (room, user) VALUES (?1, ?2)",
                params![room, user],
            )?;
            Ok(true)
        })
        .await
    }

    /// Takes `user` out of `room`; false if they were not in it.
    pub async fn leave(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        let (room, user) = (room.to_string(), user.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM members WHERE room = ?1 AND user = ?2",
                params![room, user],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// The rooms `user` is a member of.
    pub async fn rooms_of(&self, user: &str) -> anyhow::Result<Vec<String>> {
        self.names(
            "SELECT room FROM members WHERE user = ?1 ORDER BY room",
            user,
        )
        .await
    }

    /// The members of `room`.
    pub async fn members(&self, room: &str) -> anyhow::Result<Vec<String>> {
        self.names(
            "SELECT user FROM members WHERE room = ?1 ORDER BY user",
            room,
        )
        .await
    }

    /// Every room with a member, and `always` (the lobby everyone sees).
    pub async fn rooms(&self, always: &str) -> anyhow::Result<Vec<String>> {
        let sql = "SELECT ?1 UNION SELECT DISTINCT room FROM members ORDER BY 1";
        self.names(sql, always).await
    }

    /// The first column of `sql`'s rows, with `arg` as its one parameter.
    async fn names(&self, sql: &'static str, arg: &str) -> anyhow::Result<Vec<String>> {
        let arg = arg.to_string();
        self.call(move |c| strings(c, sql, [arg])).await
    }

    /// Keeps a direct message for `to`, who is offline: [`Kept::Yes`], or why not.
    pub async fn keep(&self, to: &str, from: &str, text: &str, ts: i64) -> anyhow::Result<Kept> {
        let (to, from, text) = (to.to_string(), from.to_string(), text.to_string());
        self.call(move |c| {
            let known: Option<i64> = c
                .query_row("SELECT 1 FROM users WHERE name = ?1", [&to], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Ok(Kept::NoSuchUser);
            }
            let count: i64 = c.query_row(
                "SELECT COUNT(*) FROM waiting WHERE recipient = ?1",
                [&to],
                |r| r.get(0),
            )?;
            if count as usize >= MAX_WAITING {
                return Ok(Kept::Full);
            }
            c.execute(
                "INSERT INTO waiting (recipient, sender, body, ts) VALUES (?1, ?2, ?3, ?4)",
                params![to, from, text, ts],
            )?;
            Ok(Kept::Yes)
        })
        .await
    }

    /// Takes every message waiting for `user`, oldest first.
    pub async fn take_waiting(&self, user: &str) -> anyhow::Result<Vec<Waiting>> {
        let user = user.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let waiting = {
                let mut st = tx.prepare(
                    "SELECT sender, body, ts FROM waiting WHERE recipient = ?1 ORDER BY id",
                )?;
                let rows = st.query_map([&user], |r| {
                    Ok(Waiting {
                        from: r.get(0)?,
                        text: r.get(1)?,
                        ts: r.get(2)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>>>()?
            };
            tx.execute("DELETE FROM waiting WHERE recipient = ?1", [&user])?;
            tx.commit()?;
            Ok(waiting)
        })
        .await
    }
}

fn strings<P: rusqlite::Params>(c: &Connection, sql: &str, p: P) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(p, |r| r.get::<_, String>(0))?;
    rows.collect()
}
