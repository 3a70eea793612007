//! Where things are written: a side table from key path (`routes[2].pool`) to position,
//! filled by the readers and used only for diagnostics, so the typed model stays free of
//! file positions and compares equal however a definition moves in the file.

use super::raw::Pos;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Spans {
    at: HashMap<String, Pos>,
    /// For each list (`pools`), the key paths of the entries that were read, in order:
    /// an entry that failed to read is missing from the model, not from the file.
    items: HashMap<&'static str, Vec<String>>,
}

impl Spans {
    /// Records where `path` is written.
    pub fn set(&mut self, path: &str, pos: Pos) {
        self.at.insert(path.to_string(), pos);
    }

    /// Where `path` is written, else its nearest recorded ancestor (`routes[2].pool`
    /// falls back to `routes[2]`), else the top of the file.
    pub fn at(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.at.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Pos::default(),
            }
        }
    }

    /// Records that the entry at `path` of `list` was read into the model.
    pub fn item(&mut self, list: &'static str, path: &str) {
        self.items.entry(list).or_default().push(path.to_string());
    }

    /// The key path of the `i`th entry of `list` in the model.
    pub fn item_path(&self, list: &str, i: usize) -> String {
        self.items
            .get(list)
            .and_then(|v| v.get(i))
            .cloned()
            .unwrap_or_else(|| format!("{list}[{i}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let mut s = Spans::default();
        s.set("routes[2]", Pos { line: 7, column: 3 });
        s.set(
            "routes[2].pool",
            Pos {
                line: 9,
                column: 11,
            },
        );
        assert_eq!(s.at("routes[2].pool").line, 9);
        assert_eq!(s.at("routes[2].listeners[0]").line, 7);
        assert_eq!(s.at("pools[0]"), Pos::default());
        s.item("routes", "routes[2]");
        assert_eq!(s.item_path("routes", 0), "routes[2]");
        assert_eq!(s.item_path("routes", 1), "routes[1]");
    }
}
