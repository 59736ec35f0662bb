//! The rooms of one server: one encoding per publish, membership kept from both sides.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::channel::{outbox::Queued, Meta};
use crate::hub::local::test_context;

static ENCODED: AtomicUsize = AtomicUsize::new(0);

fn counting_encoder(frame: &Frame) -> Option<Bytes> {
    ENCODED.fetch_add(1, Ordering::SeqCst);
    Some(frame.payload.clone())
}

fn channels(n: u64) -> Vec<Channel> {
    let context = test_context();
    (1..=n)
        .map(|i| Channel::new(format!("c{i}").into(), Meta::new(), i, context.clone()))
        .collect()
}

#[test]
fn a_publish_is_encoded_once_and_every_member_queues_the_same_bytes() {
    let context = test_context();
    let options = ServerOptions::default();
    let rooms = Rooms::new(&options, context.metrics.clone(), counting_encoder, None);
    let chans = channels(3);
    for c in &chans {
        rooms.join(c, "r").unwrap();
    }
    let before = ENCODED.load(Ordering::SeqCst);
    let done = rooms
        .publish("r", Frame::text("hello"), Some(chans[2].serial()))
        .unwrap();
    assert_eq!(ENCODED.load(Ordering::SeqCst) - before, 1);
    assert_eq!((done.delivered, done.skipped, done.closed), (2, 0, 0));
    let shared: Vec<Arc<SharedFrame>> = chans[..2]
        .iter()
        .map(|c| {
            match c
                .outbox()
                .take_batch(0, &mut |_, _| {})
                .unwrap()
                .0
                .and_then(|q| q.frames.into_iter().next())
            {
                Some(Queued::Shared(s)) => s,
                _ => panic!("a published frame is queued shared"),
            }
        })
        .collect();
    assert!(Arc::ptr_eq(&shared[0], &shared[1]));
    assert!(
        chans[2]
            .outbox()
            .take_batch(0, &mut |_, _| {})
            .unwrap()
            .0
            .is_none(),
        "the sender is left out"
    );
}

#[test]
fn membership_is_kept_from_both_sides_and_an_empty_room_is_dropped() {
    let context = test_context();
    let options = ServerOptions::builder()
        .max_rooms_per_channel(2)
        .build()
        .unwrap();
    let rooms = Rooms::new(&options, context.metrics.clone(), |_| None, None);
    let chans = channels(2);
    rooms.join(&chans[0], "a").unwrap();
    rooms.join(&chans[0], "a").unwrap();
    rooms.join(&chans[0], "b").unwrap();
    assert_eq!(
        rooms.join(&chans[0], "c"),
        Err(PushError::TooManyRooms { max: 2 })
    );
    assert_eq!(
        rooms.join(&chans[0], "bad name"),
        Err(PushError::BadRoomName)
    );
    rooms.join(&chans[1], "a").unwrap();
    assert_eq!(rooms.size("a"), 2);
    let mut mine = rooms.rooms_of(chans[0].serial());
    mine.sort();
    assert_eq!(mine, ["a", "b"]);
    rooms.leave(&chans[0], "b").unwrap();
    rooms.leave(&chans[0], "b").unwrap();
    assert!(
        !rooms.by_name.read().contains_key("b"),
        "an empty room is dropped"
    );
    rooms.leave_all(chans[0].serial());
    rooms.leave_all(chans[1].serial());
    assert!(rooms.by_name.read().is_empty());
    assert!(rooms.joined.iter().all(|s| s.lock().is_empty()));
    let m = &context.metrics.rooms;
    assert_eq!((m.rooms.get(), m.memberships.get()), (0, 0));
    // A closing channel joins nothing.
    chans[1].outbox().refuse_pushes();
    assert_eq!(rooms.join(&chans[1], "a"), Err(PushError::Closed));
}
