//! The debug listener's query parser: `seconds=N` for a CPU profile, taken from the request
//! target. The input is a request target (parsed as a URI first, as the server receives it)
//! or, when it does not parse as one, a bare query string.
//!
//! Promises: no panic; an accepted value is within 1..=300; a query that names `seconds` once
//! with a value in range gives exactly that value.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX: u64 = 300;

fn check(query: &str) {
    let got = kim_debug::internals::parse_seconds(query);
    if let Ok(n) = got {
        assert!((1..=MAX).contains(&n), "{query:?} gave {n}");
    }
    // An independent reading of the query: the values given for `seconds`.
    let given: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| match p.split_once('=') {
            Some((k, v)) => (k == "seconds").then_some(v),
            None => (p == "seconds").then_some(""),
        })
        .collect();
    match given.as_slice() {
        [] => assert!(got.is_ok(), "{query:?}: no seconds given, yet {got:?}"),
        [v] => {
            let expect = v.parse::<u64>().ok().filter(|n| (1..=MAX).contains(n));
            assert_eq!(got.ok(), expect, "{query:?}");
        }
        _ => assert!(got.is_err(), "{query:?}: seconds given twice, yet {got:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<hyper::Uri>() {
        Ok(uri) => check(uri.query().unwrap_or("")),
        Err(_) => check(text),
    }
});
