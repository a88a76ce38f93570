//! SQL statements that both a schema function and the Rust code run: one source for each.
//!
//! The convention (also in `schema.sql`'s header): such a statement lives in
//! `schema/statements/<name>.sql`, a complete SQL file that creates the function(s) running
//! it, with the statement itself between a line `-- statement <name>` and a line
//! `-- end statement <name>`. The schema installs the file like any functions file; the Rust
//! code takes the lines between the markers out of the same file at compile time
//! ([`statement!`]), so the two cannot drift apart and no test has to compare copies. A
//! marker that is missing or out of order stops the build.

/// The statement `$name` from `schema/statements/$name.sql`, as a `&'static str` constant
/// (evaluated at compile time).
macro_rules! statement {
    ($name:literal) => {
        $crate::statements::between_markers(
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/schema/statements/",
                $name,
                ".sql"
            )),
            concat!("-- statement ", $name, "\n"),
            concat!("-- end statement ", $name),
        )
    };
}
pub(crate) use statement;

/// The text of `file` after the line `start` (which includes its newline) and before the line
/// starting with `end`, without trailing white space. Panics (at compile time, in a constant)
/// when a marker is missing.
pub(crate) const fn between_markers(file: &'static str, start: &str, end: &str) -> &'static str {
    let bytes = file.as_bytes();
    let from = match find(bytes, start.as_bytes(), 0) {
        Some(at) => at + start.len(),
        None => panic!("statement start marker not found"),
    };
    let mut to = match find(bytes, end.as_bytes(), from) {
        Some(at) => at,
        None => panic!("statement end marker not found"),
    };
    while to > from && bytes[to - 1].is_ascii_whitespace() {
        to -= 1;
    }
    let (head, _) = bytes.split_at(to);
    let (_, text) = head.split_at(from);
    match std::str::from_utf8(text) {
        Ok(text) => text,
        Err(_) => panic!("statement is not UTF-8"),
    }
}

/// Where `needle` first occurs in `haystack` at or after `from`, at the start of a line.
const fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + needle.len() <= haystack.len() {
        if i == 0 || haystack[i - 1] == b'\n' {
            let mut j = 0;
            while j < needle.len() && haystack[i + j] == needle[j] {
                j += 1;
            }
            if j == needle.len() {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// `parts` joined, as the bytes of a constant: `N` must be their total length (checked at
/// compile time). With [`as_str`], builds a `&'static str` constant from statements and
/// literals.
pub(crate) const fn concat<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            out[at] = bytes[i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(at == N, "concat: N is not the total length of the parts");
    out
}

/// The total length of `parts`, for [`concat`]'s `N`.
pub(crate) const fn total_len(parts: &[&str]) -> usize {
    let mut n = 0;
    let mut p = 0;
    while p < parts.len() {
        n += parts[p].len();
        p += 1;
    }
    n
}

/// `bytes` (made of `&str` parts by [`concat`]) as a `&str`.
pub(crate) const fn as_str(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => panic!("not UTF-8"),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const FILE: &str =
        "CREATE FUNCTION f() AS $$\n-- statement s\nSELECT 1\n  FROM t\n\n-- end statement s\n;$$;\n";

    #[test]
    fn takes_the_lines_between_the_markers() {
        const S: &str = between_markers(FILE, "-- statement s\n", "-- end statement s");
        assert_eq!(S, "SELECT 1\n  FROM t");
    }

    #[test]
    fn markers_count_only_at_the_start_of_a_line() {
        let file = "x -- statement s\n-- statement s\nA\n-- end statement s\n";
        assert_eq!(
            between_markers(file, "-- statement s\n", "-- end statement s"),
            "A"
        );
    }

    #[test]
    fn joins_constants() {
        const PARTS: &[&str] = &["(", "SELECT 1", ") UNION ALL SELECT 2"];
        const BYTES: [u8; total_len(PARTS)] = concat(PARTS);
        const SQL: &str = as_str(&BYTES);
        assert_eq!(SQL, "(SELECT 1) UNION ALL SELECT 2");
    }

    #[test]
    fn the_statement_files_have_their_markers() {
        let read_after = statement!("read_after");
        assert!(read_after.starts_with("WITH s AS"), "{read_after}");
        assert!(read_after.ends_with("LIMIT $2"), "{read_after}");
    }
}
