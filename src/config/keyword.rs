//! Keyword enums: each variant's spelling is written once, in a `keyword!` declaration,
//! and serves the reader (`FromStr`), its "one of a | b" message and the admin view
//! (`as_str`, `Display`, `Serialize`).

/// A closed set of words a configuration key accepts.
pub trait Keyword: Copy + Sized + 'static {
    /// Every spelling, in declaration order.
    const NAMES: &'static [&'static str];
    /// Every value, in the order of `NAMES`.
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    /// The value spelled `s`, exactly.
    fn from_name(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// `one of a | b | c`, as error messages put it.
    fn expected() -> String {
        format!("one of {}", Self::NAMES.join(" | "))
    }
}

/// Declares a `Copy` enum whose variants are spelled as given:
/// `keyword! { pub enum Scope { Local = "local", Cluster = "cluster" } }`.
macro_rules! keyword {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::config::keyword::Keyword for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $name {
            /// The spelling in the configuration file.
            pub fn as_str(self) -> &'static str {
                $crate::config::keyword::Keyword::as_str(self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::config::value::ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                use $crate::config::keyword::Keyword;
                Self::from_name(s)
                    .ok_or_else(|| $crate::config::value::ValueError::invalid(s, Self::expected()))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

pub(crate) use keyword;

#[cfg(test)]
mod tests {
    use super::Keyword;
    use crate::config::*;

    fn round_trip<K: Keyword + PartialEq + std::fmt::Debug>() {
        for (k, name) in K::ALL.iter().zip(K::NAMES) {
            assert_eq!(k.as_str(), *name);
            assert_eq!(K::from_name(name), Some(*k));
        }
        assert_eq!(K::NAMES.len(), K::ALL.len());
    }

    #[test]
    fn every_keyword_round_trips() {
        round_trip::<Algorithm>();
        round_trip::<HealthKind>();
        round_trip::<UpstreamProtocol>();
        round_trip::<TcpProtocol>();
        round_trip::<ClientAuth>();
        round_trip::<TlsVersion>();
        round_trip::<RateLimitAlgorithm>();
        round_trip::<Scope>();
        round_trip::<LogLevel>();
        round_trip::<AccessLogKeyword>();
    }

    #[test]
    fn messages_list_the_names() {
        assert_eq!(
            HealthKind::expected(),
            "one of http | tcp | postgres | mysql | none"
        );
        assert_eq!(
            "fast".parse::<Scope>().map_err(|e| e.to_string()),
            Err("\"fast\" is not one of local | cluster".to_string())
        );
        assert_eq!(TlsVersion::Tls13.to_string(), "1.3");
    }
}
