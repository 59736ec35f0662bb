//! permessage-deflate negotiation (RFC 7692 section 7.1): the server picks the first offer it
//! can honour from `Sec-WebSocket-Extensions`; the client checks the server's answer.
//!
//! An offer with an unknown, repeated or malformed parameter, or a window kim cannot compress
//! in (`server_max_window_bits=8`), is declined and the next one considered; when none is left
//! the connection goes on uncompressed.

use crate::compression::{Compression, PerMessageDeflate};
use crate::deflate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

const NAME: &str = "permessage-deflate";

/// One extension of a `Sec-WebSocket-Extensions` list: its name and parameters, values
/// unquoted.
#[derive(Debug, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Splits `s` at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses header values into extensions; empty list elements are skipped.
fn parse_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Extension> {
    let mut out = Vec::new();
    for value in values {
        for item in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(item, ';').into_iter();
            let name = parts.next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            let params = parts
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => {
                        let v = v.trim();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .map(|v| v.replace('\\', ""))
                            .unwrap_or_else(|| v.to_string());
                        (k.trim().to_ascii_lowercase(), Some(v))
                    }
                    None => (p.trim().to_ascii_lowercase(), None),
                })
                .collect();
            out.push(Extension {
                name: name.to_ascii_lowercase(),
                params,
            });
        }
    }
    out
}

/// A window size value: 8 to 15, digits only, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// The parameters of one permessage-deflate element, each at most once and each valid;
/// `None` for anything else.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: named without a value (the client accepts any limit).
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_params(params: &[(String, Option<String>)]) -> Option<Params> {
    let mut p = Params::default();
    let mut seen = [false; 4];
    for (k, v) in params {
        let i = match k.as_str() {
            "server_no_context_takeover" if v.is_none() => {
                p.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if v.is_none() => {
                p.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                p.server_max_window_bits = Some(window_bits(v.as_deref()?)?);
                2
            }
            "client_max_window_bits" => {
                p.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(p)
}

/// The server's choice among the offers in the request's `Sec-WebSocket-Extensions` values:
/// the agreement and the response header's value, or `None` to go on uncompressed.
pub(crate) fn accept_offer<'a>(
    values: impl IntoIterator<Item = &'a str>,
    config: &Compression,
) -> Option<(PerMessageDeflate, String)> {
    for offer in parse_extensions(values) {
        if offer.name != NAME {
            continue;
        }
        let Some(p) = parse_params(&offer.params) else {
            continue;
        };
        let limit = p.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
        if limit < MIN_WINDOW_BITS {
            continue;
        }
        let (server_no_context_takeover, bits) = match config.takeover {
            Some((bits, _)) => (p.server_no_context_takeover, bits.min(limit)),
            None => (true, limit),
        };
        let agreed = PerMessageDeflate {
            server_no_context_takeover,
            // Asked of every client: kim then keeps no inflate state per connection.
            client_no_context_takeover: true,
            server_max_window_bits: bits,
            client_max_window_bits: MAX_WINDOW_BITS,
        };
        let response = agreed.response(p.server_max_window_bits.is_some());
        return Some((agreed, response));
    }
    None
}

/// The client's offer.
pub(crate) fn client_offer() -> String {
    format!("{NAME}; client_max_window_bits")
}

/// Checks the server's `Sec-WebSocket-Extensions` answer to [`client_offer`]: `Ok(None)` when
/// it declined, an error for an answer the client cannot accept (an extension it did not
/// offer, parameters it did not allow, a window it cannot compress in).
pub(crate) fn check_response<'a>(
    values: impl IntoIterator<Item = &'a str>,
    offered: bool,
) -> Result<Option<PerMessageDeflate>, String> {
    let mut exts = parse_extensions(values).into_iter();
    let Some(ext) = exts.next() else {
        return Ok(None);
    };
    if !offered || ext.name != NAME || exts.next().is_some() {
        return Err("the server answered with extensions that were not offered".into());
    }
    let p = parse_params(&ext.params)
        .ok_or_else(|| "the server's permessage-deflate parameters are invalid".to_string())?;
    let client_bits = match p.client_max_window_bits {
        Some(Some(n)) if n < MIN_WINDOW_BITS => {
            return Err(format!("client_max_window_bits={n} cannot be honoured"))
        }
        Some(Some(n)) => n,
        Some(None) => return Err("client_max_window_bits without a value in a response".into()),
        None => MAX_WINDOW_BITS,
    };
    Ok(Some(PerMessageDeflate {
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover,
        server_max_window_bits: p.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
        client_max_window_bits: client_bits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(offer: &str) -> Option<String> {
        accept_offer([offer], &Compression::new()).map(|(_, r)| r)
    }

    #[test]
    fn browsers_offers_are_accepted_without_context() {
        let chrome = "permessage-deflate; client_max_window_bits";
        assert_eq!(
            accept(chrome).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let (agreed, _) = accept_offer([chrome], &Compression::new()).unwrap();
        assert_eq!(agreed.server_max_window_bits, 15);
        assert!(agreed.client_no_context_takeover);
    }

    #[test]
    fn a_window_limit_is_honoured_or_the_offer_declined() {
        let r = accept("permessage-deflate; server_max_window_bits=10").unwrap();
        assert!(r.ends_with("server_max_window_bits=10"), "{r}");
        assert_eq!(accept("permessage-deflate; server_max_window_bits=8"), None);
        // The next offer is considered.
        let r = accept_offer(
            ["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
            &Compression::new(),
        );
        assert!(r.is_some());
        // With context takeover, the smaller of the two windows.
        let c = Compression::new().with_context_takeover(11, 1);
        let (a, r) = accept_offer(["permessage-deflate; server_max_window_bits=9"], &c).unwrap();
        assert_eq!(
            (a.server_max_window_bits, a.server_no_context_takeover),
            (9, false)
        );
        assert_eq!(
            r,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"
        );
        let (a, _) = accept_offer(["permessage-deflate"], &c).unwrap();
        assert_eq!(a.server_max_window_bits, 11);
        // A client that asks for no takeover gets none.
        let (a, _) = accept_offer(["permessage-deflate; server_no_context_takeover"], &c).unwrap();
        assert!(a.server_no_context_takeover);
    }

    #[test]
    fn offers_with_bad_parameters_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x-unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(accept(bad), None, "{bad}");
        }
        // Quoted values are values.
        assert!(accept("permessage-deflate; server_max_window_bits=\"12\"").is_some());
        // A comma inside another extension's quoted value does not split the list.
        let r = accept_offer(
            ["foo; bar=\"a,permessage-deflate\"", "permessage-deflate"],
            &Compression::new(),
        );
        assert!(r.is_some());
        assert!(accept_offer(["foo; bar=\"a,permessage-deflate\""], &Compression::new()).is_none());
    }

    #[test]
    fn the_client_checks_the_answer() {
        let ok = check_response(
            ["permessage-deflate; server_no_context_takeover; client_max_window_bits=10"],
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (ok.client_max_window_bits, ok.server_no_context_takeover),
            (10, true)
        );
        assert_eq!(check_response([], true), Ok(None));
        assert!(check_response(["permessage-deflate"], false).is_err());
        assert!(check_response(["permessage-deflate, permessage-deflate"], true).is_err());
        assert!(check_response(["permessage-deflate; client_max_window_bits=8"], true).is_err());
        assert!(check_response(["permessage-deflate; client_max_window_bits"], true).is_err());
        assert!(check_response(["x-other"], true).is_err());
    }
}
