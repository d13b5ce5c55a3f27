//! Header handling as Go's `net/http` does it, so the JSON matches echo-basic's.

use std::collections::BTreeMap;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-forwarded-for` → `X-Forwarded-For`.
/// Keys with bytes that are not token characters are returned unchanged, as Go does.
pub fn canonical_header_key(key: &str) -> String {
    if !key.bytes().all(is_token_byte) {
        return key.to_owned();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request headers as Go's `http.Request.Header` holds them: canonical keys, values in
/// arrival order, `Host` removed (it is the `host` field). Several `Cookie` headers (HTTP/2
/// splits them) are joined with `"; "`, as Go's HTTP/2 server does. Sorted keys, as Go's JSON.
pub fn echo_headers(headers: &HeaderMap, join_cookies: bool) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name == hyper::header::HOST {
            continue;
        }
        out.entry(canonical_header_key(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if join_cookies
        && let Some(cookies) = out.get_mut("Cookie")
        && cookies.len() > 1
    {
        *cookies = vec![cookies.join("; ")];
    }
    out
}

/// echo-basic's `X-Echo-Set-Header`: each value is a comma-separated list of `Name: value`;
/// each becomes a response header, a repeated name appends `,value` to the first.
/// Pairs whose name or value is not valid in HTTP are skipped.
pub fn echo_set_headers(request: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, String)> = Vec::new();
    for list in request.get_all("x-echo-set-header") {
        let Ok(list) = list.to_str() else { continue };
        for kv in list.split(',') {
            let (name, value) = kv.trim().split_once(':').unwrap_or((kv.trim(), ""));
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let value = value.trim();
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(value);
                }
                None => out.push((name, value.to_owned())),
            }
        }
    }
    out.into_iter()
        .filter_map(|(n, v)| HeaderValue::from_str(&v).ok().map(|v| (n, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_header_key("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header_key("USER-AGENT"), "User-Agent");
        assert_eq!(canonical_header_key("accept"), "Accept");
        assert_eq!(canonical_header_key("x--a"), "X--A");
        assert_eq!(canonical_header_key("x_y"), "X_y");
        assert_eq!(canonical_header_key("bad key"), "bad key");
    }

    #[test]
    fn headers_map() {
        let mut h = HeaderMap::new();
        h.append("host", "example.com".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        let m = echo_headers(&h, true);
        assert!(!m.contains_key("Host"));
        assert_eq!(m["X-Multi"], vec!["a", "b"]);
        assert_eq!(m["Cookie"], vec!["a=1; b=2"]);
        let m = echo_headers(&h, false);
        assert_eq!(m["Cookie"], vec!["a=1", "b=2"]);
    }

    #[test]
    fn set_headers() {
        let mut h = HeaderMap::new();
        h.append(
            "x-echo-set-header",
            "X-Foo: value1, X-Bar:2".parse().unwrap(),
        );
        h.append("x-echo-set-header", "x-foo: value3".parse().unwrap());
        h.append("x-echo-set-header", "bad name: x".parse().unwrap());
        let got: Vec<(String, String)> = echo_set_headers(&h)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-foo".to_owned(), "value1,value3".to_owned()),
                ("x-bar".to_owned(), "2".to_owned()),
            ]
        );
    }
}
