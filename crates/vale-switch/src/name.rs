//! Port names: netmap's `vale<switch>:<port>` grammar.
//!
//! The switch name is everything before the first `:`, "vale" prefix included (`vale0`,
//! `vale`, `valeA_1`); both identifiers use `[A-Za-z0-9_]`; the switch id may be empty
//! (`vale:x` is switch `vale`), the port may not. Two extensions: the switch id may also
//! contain `-`, so that the examples of netmap's own man page (`vale-a:0`, `vale-1:a`)
//! work, and the port part may contain `-` and `.` after its first character, so that
//! Linux interfaces such as `veth-a` or `eth0.100` can be attached by name (netmap's
//! `-NN` ring-selection suffix is not supported: `vale0:p-1` is the port `p-1`). The
//! whole name must fit the length limit, 15 characters by default as with netmap's
//! `nm_open()` and its 16-byte name.

use thiserror::Error;

/// The classic limit: 15 characters plus NUL.
pub const DEFAULT_MAX_NAME_LEN: usize = 15;
const PREFIX: &str = "vale";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("port name is empty; VALE port names look like `vale0:p1`")]
    Empty,
    #[error("port name `{name}` does not start with `vale`; VALE port names look like `vale0:p1`")]
    NotVale { name: String },
    #[error(
        "port name `{name}` has no `:` between switch and port; VALE port names look like `vale0:p1`"
    )]
    NoColon { name: String },
    #[error(
        "port name `{name}` has an empty port part after `:`; VALE port names look like `vale0:p1`"
    )]
    EmptyPort { name: String },
    #[error(
        "port name `{name}` has {ch:?} at position {pos} in the {part} part; only letters, digits and `_` are allowed (and `-`, `.` inside a port part)"
    )]
    BadChar {
        name: String,
        ch: char,
        pos: usize,
        part: &'static str,
    },
    #[error(
        "port name `{name}` is {len} characters; the limit is {limit} (see `valed --max-name-len`)"
    )]
    TooLong {
        name: String,
        len: usize,
        limit: usize,
    },
}

/// How much of a user's input an error message quotes.
pub const QUOTE_CHARS: usize = 64;

/// `input` as an error message quotes it: escaped (no control characters reach a
/// terminal or a log) and, past [`QUOTE_CHARS`] characters, cut short with `...`, so an
/// error about a huge input is not itself huge (its reply must fit one message).
pub fn quote_input(input: &str) -> String {
    let mut q: String = input
        .chars()
        .take(QUOTE_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if input.chars().nth(QUOTE_CHARS).is_some() {
        q.push_str("...");
    }
    q
}

/// A validated `vale<sw>:<port>` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortName {
    full: String,
    colon: usize,
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl PortName {
    /// Parses `name` with a length limit of `max_len` characters.
    pub fn parse(name: &str, max_len: usize) -> Result<PortName, NameError> {
        let quoted = || quote_input(name);
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if !name.starts_with(PREFIX) {
            return Err(NameError::NotVale { name: quoted() });
        }
        let len = name.chars().count();
        if len > max_len {
            return Err(NameError::TooLong {
                name: quoted(),
                len,
                limit: max_len,
            });
        }
        let Some(colon) = name.find(':') else {
            return Err(NameError::NoColon { name: quoted() });
        };
        for (pos, ch) in name.char_indices() {
            let part = if pos < colon {
                if ch == '-' {
                    continue;
                }
                "switch"
            } else if pos > colon {
                if (ch == '-' || ch == '.') && pos > colon + 1 {
                    continue;
                }
                "port"
            } else {
                continue;
            };
            if !ident_char(ch) {
                return Err(NameError::BadChar {
                    name: quoted(),
                    ch,
                    pos,
                    part,
                });
            }
        }
        if colon + 1 == name.len() {
            return Err(NameError::EmptyPort { name: quoted() });
        }
        Ok(PortName {
            full: name.to_string(),
            colon,
        })
    }

    /// The whole name, `vale0:p1`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The switch, `vale0`.
    pub fn switch(&self) -> &str {
        &self.full[..self.colon]
    }

    /// The port within the switch, `p1`.
    pub fn port(&self) -> &str {
        &self.full[self.colon + 1..]
    }
}

impl std::fmt::Display for PortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_name_is_quoted_short() {
        let name = format!("vale0:{}", "x".repeat(100_000));
        let e = PortName::parse(&name, 15).unwrap_err().to_string();
        assert!(e.contains("100006 characters; the limit is 15"), "{e}");
        assert!(e.contains(&format!("`vale0:{}...`", "x".repeat(58))), "{e}");
        assert!(e.len() < 200, "{} bytes", e.len());
        assert_eq!(quote_input("vale0:\n"), "vale0:\\n");
        assert_eq!(quote_input(&"y".repeat(64)), "y".repeat(64), "64 fit whole");
    }

    fn parse(s: &str) -> Result<PortName, NameError> {
        PortName::parse(s, DEFAULT_MAX_NAME_LEN)
    }

    #[test]
    fn good_names() {
        for (s, sw, port) in [
            ("vale0:a", "vale0", "a"),
            ("vale:x", "vale", "x"),
            ("valeA_1:p_2", "valeA_1", "p_2"),
            ("vale-a:0", "vale-a", "0"), // netmap's man page examples
            ("vale-1:a", "vale-1", "a"),
            ("vale0:veth-a", "vale0", "veth-a"), // Linux interface names
            ("vale0:eth0.100", "vale0", "eth0.100"),
        ] {
            let n = parse(s).unwrap();
            assert_eq!((n.switch(), n.port(), n.as_str()), (sw, port, s));
        }
        // 15 characters exactly is fine; a longer limit admits longer names.
        assert!(parse("vale012:abcdefg").is_ok());
        assert!(PortName::parse("vale0:a_very_long_port", 31).is_ok());
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("eth0", "does not start with `vale`"),
            ("vale0", "no `:`"),
            ("vale0:", "empty port"),
            ("vale.a:0", "'.' at position 4 in the switch part"),
            ("vale0:-a", "'-' at position 6 in the port part"),
            ("vale0:.a", "'.' at position 6 in the port part"),
            ("vale0:a b", "' ' at position 7 in the port part"),
            ("vale0:a:b", "':' at position 7 in the port part"),
            ("vale0:p/t", "'/' at position 7"),
            (
                "vale0:abcdefghijklmnop",
                "`vale0:abcdefghijklmnop` is 22 characters; the limit is 15 (see `valed --max-name-len`)",
            ),
            ("vale0:\u{e9}", "'\u{e9}' at position 6"),
        ];
        for (name, want) in cases {
            let e = parse(name).unwrap_err().to_string();
            assert!(e.contains(want), "{name:?}: {e}");
        }
    }

    #[test]
    fn control_characters_are_escaped_in_errors() {
        let e = parse("vale0:\n\x1b[2J").unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\x1b'), "{e}");
    }
}
