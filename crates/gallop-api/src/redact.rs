//! Secrets a client may put in what it sends, kept out of everything gallop says back or writes
//! down: credentials in a uri (`http://user:pass@host/`), query parameters that carry tokens,
//! keys or signatures (`?token=`, `X-Amz-Signature=`), and gallop's own API tokens. Errors, logs
//! and job views pass their text through [`redact_secrets`]; a single uri through [`redact_uri`].

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names (lowercase, matched as substrings) whose values are secrets.
const SECRET_PARAMS: [&str; 11] = [
    "token",
    "key",
    "sig",
    "secret",
    "pass",
    "pwd",
    "auth",
    "credential",
    "session",
    "jwt",
    "code",
];

/// The prefix of gallop's API tokens (`gal_` and 64 hex digits).
const TOKEN_PREFIX: &str = "gal_";

/// `uri` (absolute, or a request target such as `/path?query`) with its userinfo and secret
/// query values replaced by [`REDACTED`].
pub fn redact_uri(uri: &str) -> String {
    if uri.contains("://") {
        return redact_secrets(uri);
    }
    match uri.split_once('?') {
        Some((path, query)) => format!("{}?{}", redact_tokens(path), redact_query(query)),
        None => redact_tokens(uri),
    }
}

/// `text` with the secrets of every `scheme://` uri in it, and every gallop API token, replaced
/// by [`REDACTED`]. Everything else (host, path, the rest of the message) is kept so the text
/// still says what went wrong.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = scheme_start(rest, sep);
        out.push_str(&redact_tokens(&rest[..start]));
        let end = sep + 3 + uri_end(&rest[sep + 3..]);
        out.push_str(&redact_one_uri(&rest[start..end], sep - start));
        rest = &rest[end..];
    }
    out.push_str(&redact_tokens(rest));
    out
}

/// Where the scheme before `://` (at `sep`) begins: letters, digits, `+`, `-`, `.`.
fn scheme_start(text: &str, sep: usize) -> usize {
    text[..sep]
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || "+-.".contains(*c))
        .last()
        .map_or(sep, |(i, _)| i)
}

/// Length of the uri after `://`: it ends at whitespace, a quote or an angle bracket.
fn uri_end(after: &str) -> usize {
    after
        .find(|c: char| c.is_whitespace() || c.is_control() || "\"'<>`".contains(c))
        .unwrap_or(after.len())
}

/// One uri: `scheme://[userinfo@]authority[/path][?query][#fragment]`; `sep` is where `://` is.
fn redact_one_uri(uri: &str, sep: usize) -> String {
    let body_start = sep + 3;
    let body = &uri[body_start..];
    let mut out = String::with_capacity(uri.len());
    out.push_str(&uri[..body_start]);
    let after_userinfo = match userinfo_end(body) {
        Some(at) => {
            out.push_str(REDACTED);
            out.push('@');
            &body[at + 1..]
        }
        None => body,
    };
    let (before_query, query) = match after_userinfo.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (after_userinfo, None),
    };
    out.push_str(&redact_tokens(before_query));
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        out.push('?');
        out.push_str(&redact_query(query));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(&redact_tokens(fragment));
        }
    }
    out
}

/// The index of the `@` that ends the userinfo, if there is one. The authority normally ends at
/// the first `/`, `?` or `#`; a password may (wrongly, unencoded) contain those too, so when the
/// part before them has a `:` that is not a port, an `@` further on still ends the userinfo.
fn userinfo_end(body: &str) -> Option<usize> {
    let authority_end = body.find(['/', '?', '#']).unwrap_or(body.len());
    if let Some(at) = body[..authority_end].rfind('@') {
        return Some(at);
    }
    let authority = &body[..authority_end];
    let looks_like_password = authority
        .rsplit_once(':')
        .is_some_and(|(_, after)| !after.bytes().all(|b| b.is_ascii_digit()))
        && !authority.starts_with('[');
    if looks_like_password {
        return body.rfind('@');
    }
    None
}

/// `a=1&token=x` -> `a=1&token=REDACTED`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if is_secret_param(name) && !value.is_empty() => {
                format!("{name}={REDACTED}")
            }
            _ => redact_tokens(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|secret| name.contains(secret))
}

/// Every `gal_` followed by 16 or more hex digits (a gallop API token) becomes `gal_REDACTED`.
fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(TOKEN_PREFIX) {
        let after = &rest[at + TOKEN_PREFIX.len()..];
        let hex = after
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(after.len());
        out.push_str(&rest[..at + TOKEN_PREFIX.len()]);
        if hex >= 16 {
            out.push_str(REDACTED);
        } else {
            out.push_str(&after[..hex]);
        }
        rest = &after[hex..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_and_the_host_kept() {
        assert_eq!(
            redact_uri("http://user:pass@host.example/a.png"),
            "http://REDACTED@host.example/a.png"
        );
        assert_eq!(redact_uri("https://only-user@h/x"), "https://REDACTED@h/x");
        // An unencoded '/' or '@' in the password still ends inside the redaction.
        assert_eq!(redact_uri("http://u:pa/ss@h/x"), "http://REDACTED@h/x");
        assert_eq!(redact_uri("http://u:p@ss@h/x"), "http://REDACTED@h/x");
        // A port is not a password; an '@' in the path is not userinfo.
        assert_eq!(
            redact_uri("http://h:8080/@user/a.png"),
            "http://h:8080/@user/a.png"
        );
        assert_eq!(redact_uri("http://[::1]:80/a"), "http://[::1]:80/a");
    }

    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(
            redact_uri("https://b.s3.example/k.png?X-Amz-Signature=abc&X-Amz-Credential=AKIA&w=3"),
            "https://b.s3.example/k.png?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&w=3"
        );
        assert_eq!(
            redact_uri("http://h/a?access_token=t0k&api_key=k3y#frag"),
            "http://h/a?access_token=REDACTED&api_key=REDACTED#frag"
        );
        // A request target, as the server's request logs see it.
        assert_eq!(
            redact_uri("/v1/files/j1?exp=17&sig=abcdef"),
            "/v1/files/j1?exp=17&sig=REDACTED"
        );
    }

    #[test]
    fn uris_inside_messages_and_gallop_tokens() {
        let token = format!("gal_{}", "ab12".repeat(16));
        let text = format!(
            "/input/image: image uri \"http://bob:hunter2@10.0.0.1/x.png\": HTTP 404; \
             Bearer {token}; see ftp://a:b@c"
        );
        let out = redact_secrets(&text);
        assert!(!out.contains("hunter2") && !out.contains("bob"), "{out}");
        assert!(!out.contains(&token[4..]), "{out}");
        assert!(out.contains("http://REDACTED@10.0.0.1/x.png\""), "{out}");
        assert!(out.contains("ftp://REDACTED@c"), "{out}");
        assert!(out.starts_with("/input/image: image uri"), "{out}");
        assert_eq!(redact_secrets("no uri: gal_12 here"), "no uri: gal_12 here");
    }
}
