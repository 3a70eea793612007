//! A MaxMind DB writer for tests, from the published format specification
//! (https://maxmind.github.io/MaxMind-DB/): an IPv4 search tree with 32-bit records,
//! the data section (maps, strings, unsigned integers, arrays) and the metadata map.
//! It writes country databases of single addresses, in GeoIP2-Country's layout.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

enum Field {
    Str(String),
    Uint(u8, u64),
    Map(Vec<(String, Field)>),
    Array(Vec<Field>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        _ => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        // Extended type: type 0 in the control byte, then type - 7.
        out.push(low);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

fn encode(out: &mut Vec<u8>, f: &Field) {
    match f {
        Field::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Field::Uint(kind, v) => {
            let bytes = v.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            control(out, *kind, 8 - skip);
            out.extend_from_slice(&bytes[skip..]);
        }
        Field::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Field::Str(k.clone()));
                encode(out, v);
            }
        }
        Field::Array(items) => {
            control(out, 11, items.len());
            for i in items {
                encode(out, i);
            }
        }
    }
}

fn s(v: &str) -> Field {
    Field::Str(v.to_string())
}

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// A database mapping each IPv4 address to its country's ISO code.
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets: BTreeMap<String, usize> = BTreeMap::new();
    for (_, iso) in entries {
        if !offsets.contains_key(*iso) {
            offsets.insert(iso.to_string(), data.len());
            let record = Field::Map(vec![(
                "country".into(),
                Field::Map(vec![
                    ("iso_code".into(), s(iso)),
                    ("names".into(), Field::Map(vec![("en".into(), s(iso))])),
                ]),
            )]);
            encode(&mut data, &record);
        }
    }
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    for (ip, iso) in entries {
        let bits = u32::from(ip.parse::<Ipv4Addr>().expect("an IPv4 address"));
        let mut node = 0;
        for i in 0..32 {
            let side = ((bits >> (31 - i)) & 1) as usize;
            if i == 31 {
                nodes[node][side] = Record::Data(offsets[*iso]);
                break;
            }
            node = match nodes[node][side] {
                Record::Node(n) => n,
                _ => {
                    nodes.push([Record::Empty; 2]);
                    let n = nodes.len() - 1;
                    nodes[node][side] = Record::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for r in pair {
            let v = match *r {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Field::Map(vec![
        ("node_count".into(), Field::Uint(6, count as u64)),
        ("record_size".into(), Field::Uint(5, 32)),
        ("ip_version".into(), Field::Uint(5, 4)),
        ("database_type".into(), s("GeoIP2-Country")),
        ("languages".into(), Field::Array(vec![s("en")])),
        ("binary_format_major_version".into(), Field::Uint(5, 2)),
        ("binary_format_minor_version".into(), Field::Uint(5, 0)),
        ("build_epoch".into(), Field::Uint(9, 1_700_000_000)),
        (
            "description".into(),
            Field::Map(vec![("en".into(), s("switchyard test countries"))]),
        ),
    ]);
    encode(&mut out, &metadata);
    out
}
