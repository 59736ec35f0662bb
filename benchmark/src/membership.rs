//! What room membership costs a server: C channels log in with the mock protocol, the
//! server's resident memory is read, then every channel joins R rooms (`/join <room>`, each
//! answered `joined <room>`) and it is read again. The difference over C x R is the memory
//! per membership, both sides of it (the room's member, the channel's room) and each room's
//! own share.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::wire::{self, Wire};

/// What a membership run measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MembershipResult {
    /// Channels logged in.
    pub channels: usize,
    /// Rooms each channel joined.
    pub rooms_each: usize,
    /// Rooms in all.
    pub rooms: usize,
    /// The server's resident memory with every channel logged in and in no room, bytes.
    pub rss_before: u64,
    /// The same once every channel joined its rooms.
    pub rss_after: u64,
    /// (after - before) / (channels x rooms_each).
    pub bytes_per_membership: f64,
    /// Joins answered per second (each connection's joins sent together, one connection
    /// after another).
    pub joins_per_sec: f64,
}

/// The `k`th room of channel `i`, among `rooms`: every room gets the same number of members
/// when `rooms` divides `channels x rooms_each` and `rooms_each` divides `rooms`.
fn room_of(i: usize, k: usize, rooms: usize, rooms_each: usize) -> usize {
    (i + k * (rooms / rooms_each).max(1)) % rooms
}

/// Logs `channels` channels in at `addr` (the mock protocol over websocket), then has each
/// join `rooms_each` of `rooms` rooms; `rss` reads the server's resident memory.
pub fn membership(
    addr: &str,
    channels: usize,
    rooms_each: usize,
    rooms: usize,
    rss: impl Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<MembershipResult> {
    anyhow::ensure!(rooms_each <= rooms, "a channel joins at most every room");
    let mut conns = Vec::with_capacity(channels);
    for i in 0..channels {
        conns.push(
            wire::login(addr, Wire::Ws, &format!("m{i}")).with_context(|| format!("login {i}"))?,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss()?;
    let started = Instant::now();
    let mut reply = Vec::new();
    for (i, s) in conns.iter_mut().enumerate() {
        let mut requests = Vec::new();
        // What the server answers, exactly: a text frame `joined <room>` per join, in order.
        let mut expected = Vec::new();
        for k in 0..rooms_each {
            let name = format!("room{}", room_of(i, k, rooms, rooms_each));
            requests.extend(Wire::Ws.text_request(format!("/join {name}").as_bytes()));
            let answer = format!("joined {name}");
            anyhow::ensure!(answer.len() < 126, "room names this long are not measured");
            expected.extend([0x81, answer.len() as u8]);
            expected.extend(answer.as_bytes());
        }
        s.write_all(&requests)?;
        reply.resize(expected.len(), 0);
        s.read_exact(&mut reply)
            .with_context(|| format!("channel {i}'s joins answered"))?;
        if reply != expected {
            bail!("channel {i}: its joins were not each answered `joined <room>`");
        }
    }
    let joins_per_sec = (channels * rooms_each) as f64 / started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss()?;
    drop(conns);
    Ok(MembershipResult {
        channels,
        rooms_each,
        rooms,
        rss_before,
        rss_after,
        bytes_per_membership: (rss_after as f64 - rss_before as f64)
            / (channels * rooms_each) as f64,
        joins_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_gets_as_many_members() {
        let (channels, each, rooms) = (1000, 10, 100);
        let mut members = vec![0; rooms];
        for i in 0..channels {
            let mut mine: Vec<usize> = (0..each).map(|k| room_of(i, k, rooms, each)).collect();
            mine.sort();
            mine.dedup();
            assert_eq!(mine.len(), each, "channel {i} joins distinct rooms");
            for r in mine {
                members[r] += 1;
            }
        }
        assert!(members.iter().all(|&m| m == channels * each / rooms));
    }
}
