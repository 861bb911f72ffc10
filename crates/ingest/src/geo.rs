//! Country, region and city of a client IP, from a MaxMind-format database (GeoIP2 or
//! GeoLite2 City or Country, or any database with the same layout) when `geo.database` names
//! one; nothing otherwise. The gateway looks the IP up once per request, before the IP may be
//! truncated or dropped, so location survives IP minimisation.
//!
//! What is kept: the country's ISO 3166-1 alpha-2 code (`FR`), the first subdivision's ISO
//! 3166-2 code without the country (`IDF` for Île-de-France), and the city's English name.
//! Networks the database does not cover, private and loopback addresses among them, have no
//! location.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use maxminddb::{geoip2, Reader};

/// A client's location, as far as the database knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.region.is_none() && self.city.is_none()
    }
}

/// An opened database, read into memory once at start-up (a City database is ~70 MB).
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl GeoDb {
    /// Opens the database at `path`; fails with the path and why (start-up stops on it).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = Reader::open_readfile(path)
            .with_context(|| format!("cannot open the geo database {}", path.display()))?;
        Ok(Self { reader })
    }

    /// What the database says of `ip`. A record that does not decode as a City or Country
    /// record is no location (logged once per request at debug level, not an error: the
    /// request is served either way).
    pub fn locate(&self, ip: IpAddr) -> Location {
        let found = self
            .reader
            .lookup(ip)
            .and_then(|result| result.decode::<geoip2::City<'_>>());
        match found {
            Ok(Some(city)) => Location {
                country: city.country.iso_code.map(str::to_owned),
                region: city
                    .subdivisions
                    .first()
                    .and_then(|s| s.iso_code)
                    .map(str::to_owned),
                city: city.city.names.english.map(str::to_owned),
            },
            Ok(None) => Location::default(),
            Err(e) => {
                tracing::debug!(error = %e, %ip, "the geo database has no usable record");
                Location::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmdb_writer::{Value, Writer};

    /// A small City database: Paris (with region), a country-only network, and IPv6.
    fn database(dir: &Path) -> std::path::PathBuf {
        let mut writer = Writer::new("GeoIP2-City");
        let names = |en: &str| Value::map([("en", Value::from(en))]);
        writer
            .insert_value(
                "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
                Value::map([
                    (
                        "country",
                        Value::map([("iso_code", Value::from("FR")), ("names", names("France"))]),
                    ),
                    (
                        "subdivisions",
                        Value::Array(vec![Value::map([
                            ("iso_code", Value::from("IDF")),
                            ("names", names("Île-de-France")),
                        ])]),
                    ),
                    ("city", Value::map([("names", names("Paris"))])),
                ]),
            )
            .unwrap();
        writer
            .insert_value(
                "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
                Value::map([("country", Value::map([("iso_code", Value::from("DE"))]))]),
            )
            .unwrap();
        writer
            .insert_value(
                "2001:db8::/32".parse::<ipnet::IpNet>().unwrap(),
                Value::map([("country", Value::map([("iso_code", Value::from("JP"))]))]),
            )
            .unwrap();
        let path = dir.join("test-city.mmdb");
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        path
    }

    #[test]
    fn addresses_get_what_their_network_records() {
        let dir = std::env::temp_dir().join(format!("if-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = GeoDb::open(&database(&dir)).unwrap();
        let at = |ip: &str| db.locate(ip.parse().unwrap());
        assert_eq!(
            at("192.0.2.77"),
            Location {
                country: Some("FR".into()),
                region: Some("IDF".into()),
                city: Some("Paris".into()),
            }
        );
        assert_eq!(at("198.51.100.1").country.as_deref(), Some("DE"));
        assert_eq!(at("198.51.100.1").city, None);
        assert_eq!(at("2001:db8::1").country.as_deref(), Some("JP"));
        assert!(at("203.0.113.5").is_empty(), "not in the database");
        assert!(at("127.0.0.1").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_database_stops_start_up_naming_it() {
        let err = GeoDb::open(Path::new("/nonexistent/GeoLite2-City.mmdb"))
            .err()
            .expect("no such file");
        assert!(format!("{err:#}").contains("/nonexistent/GeoLite2-City.mmdb"));
    }
}
