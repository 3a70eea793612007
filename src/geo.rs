//! The client's country from a MaxMind DB (`server.geoip`, SPEC §13), read with the
//! `maxminddb` crate. The database is opened when a runtime is built (at start and on
//! every reload, so SIGHUP picks up an updated file) and looked up once per request.

use maxminddb::geoip2;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country([u8; 2]);

impl Country {
    pub fn new(code: &str) -> Option<Country> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the GeoIP database {path}: {source}")]
pub struct GeoError {
    path: PathBuf,
    #[source]
    source: maxminddb::MaxMindDbError,
}

/// An open country database.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl GeoIp {
    pub fn open(path: &Path) -> Result<GeoIp, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GeoIp { reader })
    }

    /// The country of `ip`, when the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        let found = self.reader.lookup(ip).ok()?;
        let record: geoip2::Country = found.decode().ok()??;
        record.country.iso_code.and_then(Country::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_two_letters_upper_case() {
        assert_eq!(
            Country::new("de").map(|c| c.as_str().to_string()),
            Some("DE".into())
        );
        assert_eq!(Country::new("DEU"), None);
        assert_eq!(Country::new("1A"), None);
    }

    #[test]
    fn a_missing_database_is_an_error_naming_it() {
        let e = GeoIp::open(Path::new("/nonexistent/x.mmdb")).err();
        assert!(e.is_some_and(|e| e.to_string().contains("/nonexistent/x.mmdb")));
    }
}
