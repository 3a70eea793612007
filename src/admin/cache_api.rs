//! `DELETE /api/v1/cache` (SPEC §11): purge everything, one URL with every variant
//! (`?host=H&path=P`) or a prefix (`?host=H&prefix=P`); answers `{"purged": N}` and hands
//! the purge to `cache_sync` for the other instances.

use super::api::{bad_field, error, json_reply, Reply};
use super::cache_sync::{Purge, PurgeQueue};
use crate::cache::Store;
use http::StatusCode;
use serde_json::json;

/// The purge a query string asks for.
pub fn parse(query: Option<&str>) -> Result<Purge, Reply> {
    let (mut host, mut path, mut prefix) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "host" => &mut host,
            "path" => &mut path,
            "prefix" => &mut prefix,
            other => {
                return Err(bad_field(
                    other,
                    "unknown parameter: use host with path or prefix",
                ))
            }
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(bad_field(&k, "given twice"));
        }
    }
    let starts_with_slash = |field: &str, v: &str| {
        if v.starts_with('/') {
            Ok(())
        } else {
            Err(bad_field(field, "must start with /"))
        }
    };
    match (host, path, prefix) {
        (None, None, None) => Ok(Purge::All),
        (Some(host), Some(path), None) if !host.is_empty() => {
            starts_with_slash("path", &path)?;
            Ok(Purge::Path { host, path })
        }
        (Some(host), None, Some(prefix)) if !host.is_empty() => {
            starts_with_slash("prefix", &prefix)?;
            Ok(Purge::Prefix { host, prefix })
        }
        (_, Some(_), Some(_)) => Err(bad_field("prefix", "give path or prefix, not both")),
        (None | Some(_), Some(_), None) | (None | Some(_), None, Some(_)) => {
            Err(bad_field("host", "required with path or prefix"))
        }
        (Some(_), None, None) => Err(bad_field(
            "path",
            "host needs path=/P (one URL) or prefix=/P; no parameters purge everything",
        )),
    }
}

/// Runs the purge on `store` and publishes it through `queue` (with `cluster.redis`).
pub fn purge(query: Option<&str>, store: Option<&Store>, queue: Option<&PurgeQueue>) -> Reply {
    let purge = match parse(query) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let Some(store) = store else {
        return error(StatusCode::NOT_FOUND, "no cache is configured");
    };
    let purged = purge.apply(store);
    if let Some(queue) = queue {
        queue.publish(purge);
    }
    json_reply(StatusCode::OK, json!({ "purged": purged }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_and_their_mistakes() {
        assert_eq!(parse(None).ok(), Some(Purge::All));
        assert_eq!(
            parse(Some("host=a.test&path=/x%20y")).ok(),
            Some(Purge::Path {
                host: "a.test".into(),
                path: "/x y".into()
            })
        );
        assert_eq!(
            parse(Some("host=a.test&prefix=/img/")).ok(),
            Some(Purge::Prefix {
                host: "a.test".into(),
                prefix: "/img/".into()
            })
        );
        for bad in [
            "path=/x",
            "host=a.test",
            "host=a.test&path=x",
            "host=a.test&path=/x&prefix=/",
            "host=a.test&path=/x&path=/y",
            "url=/x",
        ] {
            let r = parse(Some(bad)).err().map(|r| r.status);
            assert_eq!(r, Some(StatusCode::BAD_REQUEST), "{bad}");
        }
    }
}
