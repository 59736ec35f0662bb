//! The channel map kept by id: adds, replacements and removals of one login only.

use super::*;
use crate::channel::{ChannelId, Context, Meta};
use std::sync::Arc;

fn chan(context: &Arc<Context>, id: &str, serial: u64) -> Channel {
    Channel::new(ChannelId::new(id), Meta::new(), serial, context.clone())
}

#[test]
fn add_replace_and_remove_only_the_same_login() {
    let context = crate::hub::local::test_context();
    let map = ChannelMap::new();
    let a1 = chan(&context, "a", 1);
    assert!(matches!(map.add(a1.clone()), Insert::Added));
    let a2 = chan(&context, "a", 2);
    match map.add(a2.clone()) {
        Insert::Duplicate(existing) => assert!(existing.same(&a1)),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    match map.replace(a2.clone()) {
        Insert::Replaced(old) => assert!(old.same(&a1)),
        other => panic!("expected a replacement, got {other:?}"),
    }
    // The kicked login leaving must not remove the new one.
    assert!(!map.remove_channel(&a1));
    assert!(map.get("a").unwrap().same(&a2));
    for i in 0..1000 {
        map.add(chan(&context, &format!("u{i}"), i + 10));
    }
    assert_eq!(map.len(), 1001);
    let mut seen = 0;
    map.for_each(|_| seen += 1);
    assert_eq!(seen, 1001);
    assert_eq!(map.channels().len(), 1001);
    assert!(map.contains("u999") && !map.contains("u1000"));
    assert!(map.remove_channel(&a2));
    assert!(map.remove("u0").is_some());
    assert_eq!(map.len(), 999);
}
