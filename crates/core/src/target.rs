//! Target expressions: which drones a command, rule or query applies to.
//!
//! ```text
//! web-*                                    every drone whose id or hostname starts with "web-"
//! web-1,web-2,db-*                         any of these
//! label:role=web and not web-3             web drones except web-3
//! (web-* or db-*) and label:env=prod       production web and database drones
//! label:team='sre core'                    quoted values may contain spaces
//! ```
//!
//! # Grammar
//!
//! ```text
//! target    = or_expr ;
//! or_expr   = and_expr , { "or" , and_expr } ;
//! and_expr  = not_expr , { "and" , not_expr } ;
//! not_expr  = "not" , not_expr | primary ;
//! primary   = "(" , or_expr , ")" | list ;
//! list      = term , { "," , term } ;
//! term      = label | name ;
//! label     = "label:" , text , [ "=" , text ] ;     (* no whitespace inside *)
//! name      = text ;                                 (* a bare name may not be a keyword *)
//! text      = bare | quoted ;
//! bare      = ( bare_char | class ) , { bare_char | class } ;
//! bare_char = ? ASCII letter or digit ? | "." | "_" | "-" | "/" | "*" | "?" ;
//! class     = "[" , [ "!" | "^" ] , [ "]" ] , { bare_char | "[" } , "]" ;
//! quoted    = "'" , { ? any char but ' or \ ? | escape } , "'"
//!           | '"' , { ? any char but " or \ ? | escape } , '"' ;
//! escape    = "\" , ( "\" | "'" | '"' ) ;
//! ```
//!
//! Lexical rules:
//!
//! - Whitespace separates tokens and is otherwise ignored; it is allowed
//!   around `,` and parentheses but not inside a term (`label:env = prod` is
//!   an error).
//! - The keywords `and`, `or`, `not` and the prefix `label:` are
//!   case-insensitive and only recognised as whole words (`android` is a drone
//!   name). A drone literally called `and` is written quoted: `'and'`.
//! - Precedence, tightest first: `,` (inside one list of terms), `not`, `and`,
//!   `or`. So `not a,b` excludes both `a` and `b`, and `a or b and c` means
//!   `a or (b and c)`. A `,` list holds only names and labels, never
//!   parenthesised expressions; use `or` for those.
//!
//! # Matching
//!
//! - A name is a glob matched against the drone's id **or** its hostname.
//!   Globs are anchored: they must match the whole string. `*` matches any run
//!   of characters (including none), `?` exactly one, `[abc]`, `[a-z]` one
//!   character of a class and `[!a-z]` (or `[^a-z]`) one character outside it;
//!   a `]` right after the opening `[` (or `[!`) is literal. To match a
//!   literal `*`, `?` or `[`, put it in a class: `[*]`.
//! - Names match case-insensitively (ASCII), because hostnames are
//!   case-insensitive and operators should not need to know whether a host
//!   reports `WEB01` or `web01`.
//! - `label:key=value` matches a drone with a label whose key matches the key
//!   glob and whose value matches the value glob; `label:key` matches when any
//!   label key matches. Label keys and values match case-sensitively, as they
//!   are data the operator chose.
//! - Quoting only groups characters (so values may contain spaces, `,`, `:`
//!   and so on); a quoted text is still a glob.
//! - `label:key=` with nothing after `=` is an error rather than silently
//!   meaning "empty value": a stray space (`label:env= prod`) would otherwise
//!   change the meaning. An empty value is written `label:key=''`. Empty names
//!   and empty label keys are errors.
//! - Parentheses and `not` may nest at most 64 levels deep, so hostile input
//!   cannot exhaust the stack.
//!
//! # Canonical form
//!
//! [`TargetExpr`]'s `Display` prints lowercase keywords, single spaces around
//! `and`/`or`, no spaces around `,`, only the parentheses precedence requires,
//! and single quotes only where a text cannot be written bare. It re-parses
//! to an equal expression.
//!
//! ```
//! use std::collections::BTreeMap;
//! use ultron8_core::target::{parse, TargetSubject};
//!
//! let expr = parse("label:role=web* AND NOT web-3").unwrap();
//! assert_eq!(expr.to_string(), "label:role=web* and not web-3");
//!
//! let labels = BTreeMap::from([("role".to_string(), "web".to_string())]);
//! let subject = TargetSubject { id: "web-1", hostname: "web-1.example.com", labels: &labels };
//! assert!(expr.matches(&subject));
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::glob::{Glob, GlobError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many `(` and `not` may be open at once. Parsing, matching, printing
/// and dropping all recurse over this nesting, so it must stay bounded.
const MAX_DEPTH: usize = 64;

const KEYWORDS: [&str; 3] = ["and", "or", "not"];

const TERM_EXPECTED: &str = "a drone name, glob, 'label:' or '('";
const LIST_ITEM_EXPECTED: &str = "a drone name, glob or 'label:' after ','";

/// A parsed target expression. Build one with [`parse`] or `str::parse`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetExpr {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    /// A `,` list: matches when any term does. Never empty.
    Any(Vec<Term>),
    Not(Box<Node>),
    /// Always at least two operands. Operands are kept n-ary rather than
    /// nested so long `a or b or c ...` chains do not deepen the tree.
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Term {
    /// Matched against the drone id and hostname.
    Name(Glob),
    Label {
        key: Glob,
        value: Option<Glob>,
    },
}

/// A parse failure, pointing at the character where parsing could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct TargetParseError {
    /// 1-based, counted in chars; `input.chars().count() + 1` means "at the
    /// end of the input".
    pub column: usize,
    pub message: String,
}

impl TargetParseError {
    /// The input with a caret line under the column, for CLIs:
    ///
    /// ```text
    /// web-1 and
    ///          ^
    /// ```
    ///
    /// Only [`RENDER_CONTEXT`] characters either side of the column are
    /// shown, the cuts marked `…`: the input can be as long as a request,
    /// and the lines are read by a person at the column.
    pub fn render(&self, input: &str) -> String {
        let before = self.column.saturating_sub(1);
        let start = before.saturating_sub(RENDER_CONTEXT);
        let mut line = String::new();
        let mut caret = String::new();
        if start > 0 {
            line.push('…');
            caret.push(' ');
        }
        let mut count = start;
        let mut chars = input.chars().skip(start);
        for c in chars.by_ref().take(before - start + RENDER_CONTEXT) {
            // Tabs are echoed and mirrored in the caret line so the caret
            // lines up whatever the terminal's tab width; other control
            // characters (newlines) would break the two-line layout.
            let shown = if c == '\t' {
                '\t'
            } else if c.is_control() {
                ' '
            } else {
                c
            };
            line.push(shown);
            if count < before {
                caret.push(if shown == '\t' { '\t' } else { ' ' });
            }
            count += 1;
        }
        if chars.next().is_some() {
            line.push('…');
        }
        for _ in count..before {
            caret.push(' ');
        }
        caret.push('^');
        format!("{line}\n{caret}")
    }
}

/// How many characters of the input [`TargetParseError::render`] shows on
/// each side of the column.
pub const RENDER_CONTEXT: usize = 60;

/// What a target is matched against.
#[derive(Debug, Clone, Copy)]
pub struct TargetSubject<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Parses a target expression; see the [module documentation](self) for the
/// grammar.
pub fn parse(input: &str) -> Result<TargetExpr, TargetParseError> {
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    if parser.peek().is_none() {
        return Err(TargetParseError {
            column: 1,
            message: "empty target expression; use '*' for every drone".to_string(),
        });
    }
    let root = parser.parse_or(None)?;
    parser.skip_ws();
    if parser.peek().is_some() {
        let hint = parser.operator_hint(true);
        return Err(parser.expected("'and', 'or' or end of input", hint));
    }
    Ok(TargetExpr { root })
}

impl TargetExpr {
    pub fn matches(&self, subject: &TargetSubject<'_>) -> bool {
        self.root.matches(subject)
    }
}

impl FromStr for TargetExpr {
    type Err = TargetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for TargetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

// Stored and sent as the canonical string so that a stored target stays
// readable and is re-validated whenever it is loaded.
impl Serialize for TargetExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TargetExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Drone ids: 1-63 chars, [A-Za-z0-9] first, then [A-Za-z0-9._-]. Used for
/// queue names and certificates.
pub fn validate_drone_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return Err("drone id must not be empty".to_string());
    };
    let len = id.chars().count();
    if len > 63 {
        return Err(format!(
            "drone id is {len} characters long; at most 63 are allowed"
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "drone id must start with a letter or digit, not {first:?}"
        ));
    }
    for (index, c) in chars.enumerate() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(format!(
                "drone id contains {c:?} at position {}; only letters, digits, '.', '_' and '-' are allowed",
                index + 2
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Matching

impl Node {
    fn matches(&self, subject: &TargetSubject<'_>) -> bool {
        match self {
            Node::Any(terms) => terms.iter().any(|term| term.matches(subject)),
            Node::Not(inner) => !inner.matches(subject),
            Node::And(operands) => operands.iter().all(|node| node.matches(subject)),
            Node::Or(operands) => operands.iter().any(|node| node.matches(subject)),
        }
    }
}

impl Term {
    fn matches(&self, subject: &TargetSubject<'_>) -> bool {
        match self {
            Term::Name(glob) => {
                glob.matches(subject.id, true) || glob.matches(subject.hostname, true)
            }
            Term::Label { key, value } => {
                let value_ok =
                    |actual: &str| value.as_ref().is_none_or(|v| v.matches(actual, false));
                match key.literal() {
                    Some(key) => subject.labels.get(key).is_some_and(|v| value_ok(v)),
                    None => subject
                        .labels
                        .iter()
                        .any(|(k, v)| key.matches(k, false) && value_ok(v)),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Lexical helpers shared by the parser and the printer

fn is_bare_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '*' | '?')
}

fn is_bare_start(c: char) -> bool {
    is_bare_char(c) || c == '['
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|kw| word.eq_ignore_ascii_case(kw))
}

/// An unclosed `[` in a bare word: where it opened and where scanning stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScanError {
    open: usize,
    stop: usize,
}

/// The end of the bare word starting at `start` (`start` itself if there is
/// none). Classes are scanned as a unit so `!`, `^` and `]` are only word
/// characters inside them; outside, `!web` must be an error, not a literal.
fn scan_bare(chars: &[char], start: usize) -> Result<usize, ScanError> {
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        if is_bare_char(c) {
            i += 1;
        } else if c == '[' {
            let open = i;
            i += 1;
            if matches!(chars.get(i), Some('!' | '^')) {
                i += 1;
            }
            if chars.get(i) == Some(&']') {
                i += 1;
            }
            loop {
                match chars.get(i) {
                    Some(']') => {
                        i += 1;
                        break;
                    }
                    Some(&c) if is_bare_char(c) || c == '[' => i += 1,
                    _ => return Err(ScanError { open, stop: i }),
                }
            }
        } else {
            break;
        }
    }
    Ok(i)
}

/// How `text` is written in canonical form: bare when it re-lexes as exactly
/// one bare word (and, for names, is not a keyword), otherwise single-quoted.
fn text_repr(text: &str, is_name: bool) -> Cow<'_, str> {
    let chars: Vec<char> = text.chars().collect();
    let bare = !chars.is_empty()
        && scan_bare(&chars, 0) == Ok(chars.len())
        && !(is_name && is_keyword(text));
    if bare {
        return Cow::Borrowed(text);
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in chars {
        if matches!(c, '\'' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    Cow::Owned(quoted)
}

// ---------------------------------------------------------------------------
// Printing

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Any(terms) => {
                for (i, term) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    fmt::Display::fmt(term, f)?;
                }
                Ok(())
            }
            Node::Not(inner) => {
                f.write_str("not ")?;
                write_operand(f, inner, matches!(**inner, Node::And(_) | Node::Or(_)))
            }
            Node::And(operands) => write_chain(f, operands, " and ", |node| {
                // An unparenthesised `and` operand would be flattened into
                // this chain on re-parse, changing the tree.
                matches!(node, Node::And(_) | Node::Or(_))
            }),
            Node::Or(operands) => {
                write_chain(f, operands, " or ", |node| matches!(node, Node::Or(_)))
            }
        }
    }
}

fn write_chain(
    f: &mut fmt::Formatter<'_>,
    operands: &[Node],
    separator: &str,
    needs_parens: impl Fn(&Node) -> bool,
) -> fmt::Result {
    for (i, node) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write_operand(f, node, needs_parens(node))?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, node: &Node, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({node})")
    } else {
        fmt::Display::fmt(node, f)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Name(glob) => f.write_str(&text_repr(&glob.source, true)),
            Term::Label { key, value } => {
                write!(f, "label:{}", text_repr(&key.source, false))?;
                if let Some(value) = value {
                    write!(f, "={}", text_repr(&value.source, false))?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
//
// A recursive-descent parser reading chars directly: the lexical structure of
// a term depends on context (`=` ends a label key, quotes may follow
// `label:key=`), so a separate context-free tokenizer would not simplify it.

/// A name, key or value as read from the input.
struct Text {
    value: String,
    quoted: bool,
    /// Input char index of each char of `value`, plus one final entry for
    /// where the text ends, so glob errors can point into quoted strings
    /// containing escapes.
    positions: Vec<usize>,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

type ParseResult<T> = Result<T, TargetParseError>;

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, at: usize, message: impl Into<String>) -> TargetParseError {
        TargetParseError {
            column: at + 1,
            message: message.into(),
        }
    }

    /// "expected X but found Y" at the current position.
    fn expected(&self, expected: &str, hint: Option<String>) -> TargetParseError {
        let mut message = format!("expected {expected} but found {}", self.describe(self.pos));
        if let Some(hint) = hint {
            message.push_str("; ");
            message.push_str(&hint);
        }
        self.error(self.pos, message)
    }

    /// What the input holds at `at`, for "but found ..." messages.
    fn describe(&self, at: usize) -> String {
        match self.chars.get(at) {
            None => "end of input".to_string(),
            Some(c) if c.is_whitespace() => "whitespace".to_string(),
            Some('\'' | '"') => "a quoted string".to_string(),
            Some(&c) if is_bare_start(c) => {
                let word: String = self.chars[at..]
                    .iter()
                    .take_while(|&&c| is_bare_start(c) || matches!(c, ']' | '!' | '^'))
                    .take(40)
                    .collect();
                format!("'{word}'")
            }
            Some(c) => format!("'{c}'"),
        }
    }

    /// The keyword starting at the current position, if it is a whole word.
    fn keyword_here(&self) -> Option<&'static str> {
        let rest = &self.chars[self.pos..];
        let len = rest.iter().take_while(|&&c| is_bare_start(c)).count();
        let word = &rest[..len];
        KEYWORDS.into_iter().find(|kw| {
            word.len() == kw.len()
                && word
                    .iter()
                    .zip(kw.chars())
                    .all(|(a, b)| a.eq_ignore_ascii_case(&b))
        })
    }

    fn enter(&mut self, at: usize) -> ParseResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                at,
                format!("expression nested too deeply; at most {MAX_DEPTH} levels of '(' and 'not' are allowed"),
            ));
        }
        Ok(())
    }

    /// `after` names the operator whose right-hand side is being parsed, so
    /// a dangling operator can be reported as such.
    fn parse_or(&mut self, after: Option<&'static str>) -> ParseResult<Node> {
        let mut operands = vec![self.parse_and(after)?];
        loop {
            self.skip_ws();
            if self.keyword_here() != Some("or") {
                break;
            }
            self.pos += 2;
            operands.push(self.parse_and(Some("or"))?);
        }
        Ok(collapse(operands, Node::Or))
    }

    fn parse_and(&mut self, after: Option<&'static str>) -> ParseResult<Node> {
        let mut operands = vec![self.parse_not(after)?];
        loop {
            self.skip_ws();
            if self.keyword_here() != Some("and") {
                break;
            }
            self.pos += 3;
            operands.push(self.parse_not(Some("and"))?);
        }
        Ok(collapse(operands, Node::And))
    }

    fn parse_not(&mut self, after: Option<&'static str>) -> ParseResult<Node> {
        self.skip_ws();
        if self.keyword_here() == Some("not") {
            self.enter(self.pos)?;
            self.pos += 3;
            let inner = self.parse_not(Some("not"))?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.parse_primary(after)
    }

    fn parse_primary(&mut self, after: Option<&'static str>) -> ParseResult<Node> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return self.parse_list(after);
        }
        let open = self.pos;
        self.enter(open)?;
        self.pos += 1;
        let inner = self.parse_or(None)?;
        self.skip_ws();
        if self.peek() != Some(')') {
            let expected = format!("'and', 'or' or ')' to close the '(' at column {}", open + 1);
            let hint = self.operator_hint(false);
            return Err(self.expected(&expected, hint));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(inner)
    }

    fn parse_list(&mut self, after: Option<&'static str>) -> ParseResult<Node> {
        let mut terms = vec![self.parse_term(TERM_EXPECTED, after)?];
        loop {
            self.skip_ws();
            if self.peek() != Some(',') {
                break;
            }
            self.pos += 1;
            self.skip_ws();
            terms.push(self.parse_term(LIST_ITEM_EXPECTED, None)?);
        }
        Ok(Node::Any(terms))
    }

    fn parse_term(&mut self, expected: &str, after: Option<&'static str>) -> ParseResult<Term> {
        let start = self.pos;
        let Some(text) = self.read_text()? else {
            let hint = self.operand_hint(after);
            return Err(self.expected(expected, hint));
        };
        if !text.quoted && self.peek() == Some(':') {
            if text.value.eq_ignore_ascii_case("label") {
                self.pos += 1;
                return self.parse_label();
            }
            return Err(self.error(
                start,
                format!(
                    "unknown prefix '{}:'; the only prefix is 'label:'",
                    text.value
                ),
            ));
        }
        if !text.quoted && is_keyword(&text.value) {
            self.pos = start;
            let hint = self.operand_hint(after);
            return Err(self.expected(expected, hint));
        }
        if text.value.is_empty() {
            return Err(self.error(
                start,
                "expected a drone name or glob but found an empty quoted string",
            ));
        }
        let glob = self.compile(&text)?;
        self.expect_term_end(&text, true)?;
        Ok(Term::Name(glob))
    }

    /// Parses what follows `label:`.
    fn parse_label(&mut self) -> ParseResult<Term> {
        let key_at = self.pos;
        let Some(key) = self.read_text()? else {
            let hint = self
                .peek()
                .is_some_and(char::is_whitespace)
                .then(|| "no spaces are allowed inside 'label:key=value'".to_string());
            return Err(self.expected("a label key after 'label:'", hint));
        };
        if key.value.is_empty() {
            return Err(self.error(
                key_at,
                "expected a label key after 'label:' but found an empty quoted string; label keys cannot be empty",
            ));
        }
        let key_glob = self.compile(&key)?;
        if self.peek() != Some('=') {
            self.expect_term_end(&key, false)?;
            return Ok(Term::Label {
                key: key_glob,
                value: None,
            });
        }
        self.pos += 1;
        let Some(value) = self.read_text()? else {
            let hint = format!(
                "to match an empty value write label:{}=''",
                text_repr(&key.value, false)
            );
            return Err(self.expected("a label value after '='", Some(hint)));
        };
        let value_glob = self.compile(&value)?;
        self.expect_term_end(&value, false)?;
        Ok(Term::Label {
            key: key_glob,
            value: Some(value_glob),
        })
    }

    /// Reads a bare word or a quoted string; `None` if neither starts here.
    fn read_text(&mut self) -> ParseResult<Option<Text>> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => self.read_quoted(quote).map(Some),
            Some(c) if is_bare_start(c) => {
                let start = self.pos;
                let end = scan_bare(&self.chars, start).map_err(|e| {
                    self.error(
                        e.stop,
                        format!(
                            "expected ']' to close the '[' at column {} but found {}",
                            e.open + 1,
                            self.describe(e.stop)
                        ),
                    )
                })?;
                self.pos = end;
                Ok(Some(Text {
                    value: self.chars[start..end].iter().collect(),
                    quoted: false,
                    positions: (start..=end).collect(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn read_quoted(&mut self, quote: char) -> ParseResult<Text> {
        let open = self.pos;
        self.pos += 1;
        let mut value = String::new();
        let mut positions = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "expected a closing {quote} for the quote at column {} but found end of input",
                            open + 1
                        ),
                    ));
                }
                Some(c) if c == quote => {
                    positions.push(self.pos);
                    self.pos += 1;
                    return Ok(Text {
                        value,
                        quoted: true,
                        positions,
                    });
                }
                Some('\\') => match self.chars.get(self.pos + 1) {
                    Some(&escaped @ ('\\' | '\'' | '"')) => {
                        value.push(escaped);
                        positions.push(self.pos);
                        self.pos += 2;
                    }
                    Some(&other) => {
                        return Err(self.error(
                            self.pos,
                            format!(
                                "unsupported escape '\\{other}' in a quoted string; only \\\\, \\' and \\\" are recognised"
                            ),
                        ));
                    }
                    None => {
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    value.push(c);
                    positions.push(self.pos);
                    self.pos += 1;
                }
            }
        }
    }

    fn compile(&self, text: &Text) -> ParseResult<Glob> {
        Glob::new(&text.value).map_err(|e| match e {
            GlobError::Unterminated { open } => {
                let end = text.positions[text.positions.len() - 1];
                self.error(
                    end,
                    format!(
                        "expected ']' to close the '[' at column {} but found the end of the quoted string",
                        text.positions[open] + 1
                    ),
                )
            }
            GlobError::BadRange { at, lo, hi } => self.error(
                text.positions[at],
                format!("invalid range '{lo}-{hi}' in a '[...]' class: '{lo}' sorts after '{hi}'"),
            ),
        })
    }

    /// A term must be followed by a separator; this catches `web-1&web-2`,
    /// `label:a=b=c` and the like right where they go wrong.
    fn expect_term_end(&self, text: &Text, is_name: bool) -> ParseResult<()> {
        let Some(c) = self.peek() else {
            return Ok(());
        };
        if c.is_whitespace() || matches!(c, ',' | '(' | ')') {
            return Ok(());
        }
        let hint = match c {
            '\'' | '"' => "quote a whole name, key or value, not part of it".to_string(),
            '=' if is_name => "match labels with 'label:key=value'".to_string(),
            c => match char_hint(c) {
                Some(hint) => hint.to_string(),
                None => "unquoted names, keys and values may only contain letters, digits, \
                         '.', '_', '-', '/', '*', '?' and '[...]' classes; quote anything else"
                    .to_string(),
            },
        };
        Err(self.error(
            self.pos,
            format!(
                "unexpected '{c}' after {}; {hint}",
                text_repr(&text.value, false)
            ),
        ))
    }

    /// Hint for a missing operand.
    fn operand_hint(&self, after: Option<&'static str>) -> Option<String> {
        if let Some(hint) = self.peek().and_then(char_hint) {
            return Some(hint.to_string());
        }
        let operand_missing = self.peek().is_none_or(|c| c == ')') || self.keyword_here().is_some();
        match after {
            Some(op) if operand_missing => {
                Some(format!("'{op}' must be followed by an expression"))
            }
            _ => None,
        }
    }

    /// Hint for something found where an operator or the end was expected.
    fn operator_hint(&self, top_level: bool) -> Option<String> {
        let hint = match self.peek()? {
            ')' if top_level => "there is no '(' for it to close",
            ',' => {
                "',' can only join names, globs and labels; use 'or' to combine larger expressions"
            }
            '=' => "write label matches without spaces: label:key=value",
            '!' => "use 'and not' to exclude drones",
            '&' => "use 'and'",
            '|' => "use 'or'",
            c if is_bare_start(c) || matches!(c, '\'' | '"') => {
                if self.keyword_here() == Some("not") {
                    "did you mean 'and not'?"
                } else {
                    "join several drones with ',' or 'or', and quote label values that contain spaces"
                }
            }
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// Hints for operators people bring from other languages.
fn char_hint(c: char) -> Option<&'static str> {
    match c {
        '!' => Some("use 'not' to exclude drones"),
        '&' => Some("use 'and'"),
        '|' => Some("use 'or'"),
        _ => None,
    }
}

fn collapse(mut operands: Vec<Node>, chain: fn(Vec<Node>) -> Node) -> Node {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    chain(operands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    // -- helpers ------------------------------------------------------------

    struct Drone {
        id: &'static str,
        hostname: &'static str,
        labels: BTreeMap<String, String>,
    }

    fn drone(id: &'static str, hostname: &'static str, labels: &[(&str, &str)]) -> Drone {
        Drone {
            id,
            hostname,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn fleet() -> Vec<Drone> {
        vec![
            drone(
                "web-1",
                "web-1.example.com",
                &[("role", "web"), ("env", "prod"), ("team", "sre core")],
            ),
            drone(
                "web-2",
                "web-2.example.com",
                &[("role", "web"), ("env", "staging")],
            ),
            drone(
                "web-3",
                "WEB-3.example.com",
                &[("role", "web-canary"), ("env", "prod")],
            ),
            drone(
                "db-1",
                "db-1.example.com",
                &[
                    ("role", "db"),
                    ("env", "prod"),
                    ("empty", ""),
                    ("app.io/tier", "data"),
                ],
            ),
            drone("db-12", "db-12", &[("role", "db")]),
            drone("bastion", "jump.example.com", &[]),
        ]
    }

    /// Ids of the fleet drones `expr` selects, space-separated in fleet order.
    fn selected(expr: &str) -> String {
        let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr:?} failed to parse: {e}"));
        fleet()
            .iter()
            .filter(|d| {
                parsed.matches(&TargetSubject {
                    id: d.id,
                    hostname: d.hostname,
                    labels: &d.labels,
                })
            })
            .map(|d| d.id)
            .collect::<Vec<_>>()
            .join(" ")
    }

    // -- table tests --------------------------------------------------------

    #[test]
    fn documented_forms_select_the_right_drones() {
        let all = "web-1 web-2 web-3 db-1 db-12 bastion";
        let cases: &[(&str, &str)] = &[
            ("*", all),
            ("web-*", "web-1 web-2 web-3"),
            ("db-?", "db-1"),
            ("db-??", "db-12"),
            ("web-[12]", "web-1 web-2"),
            ("web-[1-2]", "web-1 web-2"),
            ("web-[!12]", "web-3"),
            ("web-[^12]", "web-3"),
            ("web", ""),
            ("eb-1", ""),
            ("jump.example.com", "bastion"),
            ("*.example.com", "web-1 web-2 web-3 db-1 bastion"),
            ("WEB-3.EXAMPLE.COM", "web-3"),
            ("Web-[A-Z]*", ""),
            ("*B-1", "web-1 db-1"),
            ("web-1,web-2,db-*", "web-1 web-2 db-1 db-12"),
            ("web-1 , db-1", "web-1 db-1"),
            ("'bastion'", "bastion"),
            ("label:role=web", "web-1 web-2"),
            ("label:role=web*", "web-1 web-2 web-3"),
            ("LABEL:role=db", "db-1 db-12"),
            ("label:role", "web-1 web-2 web-3 db-1 db-12"),
            ("label:env", "web-1 web-2 web-3 db-1"),
            ("label:role=*", "web-1 web-2 web-3 db-1 db-12"),
            ("label:*", "web-1 web-2 web-3 db-1 db-12"),
            ("label:*=db", "db-1 db-12"),
            ("label:Role=web", ""),
            ("label:role=WEB", ""),
            ("label:empty=''", "db-1"),
            ("label:empty", "db-1"),
            ("label:team='sre core'", "web-1"),
            ("label:team=\"sre core\"", "web-1"),
            ("label:team=sre*", "web-1"),
            ("label:team='sre ?ore'", "web-1"),
            ("label:app.io/tier=data", "db-1"),
            ("label:role=web and not web-3", "web-1 web-2"),
            ("label:role=web* and not web-3", "web-1 web-2"),
            ("(web-* or db-*) and label:env=prod", "web-1 web-3 db-1"),
            ("not label:role", "bastion"),
            ("not *", ""),
            ("not not web-1", "web-1"),
            // `and` binds tighter than `or`.
            ("web-1 or web-2 and label:env=prod", "web-1"),
            ("(web-1 or web-2) and label:env=prod", "web-1"),
            ("label:env=prod and web-3 or db-12", "web-3 db-12"),
            // `not` binds tighter than `and`.
            ("not web-1 and web-*", "web-2 web-3"),
            // `,` binds tighter than `not`.
            ("not web-1,web-2", "web-3 db-1 db-12 bastion"),
            ("not web-1,web-2 and label:role", "web-3 db-1 db-12"),
            ("web-1 AND label:env=prod OR NOT *", "web-1"),
            ("\tweb-1\n or\r\ndb-1 ", "web-1 db-1"),
            ("not(web-1 or web-2)and(label:role)", "web-3 db-1 db-12"),
            ("((((db-1))))", "db-1"),
        ];
        for (expr, want) in cases {
            assert_eq!(selected(expr), *want, "selection of {expr:?}");
        }
    }

    #[test]
    fn canonical_form() {
        let cases: &[(&str, &str)] = &[
            ("*", "*"),
            ("web-1 , web-2,db-*", "web-1,web-2,db-*"),
            (
                "LABEL:role=web* AND NOT web-3",
                "label:role=web* and not web-3",
            ),
            ("label:team=\"sre core\"", "label:team='sre core'"),
            ("label:empty=''", "label:empty=''"),
            ("label:\"it's\"", "label:'it\\'s'"),
            (
                "label:'a\\\\b'=\"say \\\"hi\\\"\"",
                "label:'a\\\\b'='say \"hi\"'",
            ),
            ("label:role='web'", "label:role=web"),
            ("label:and=or", "label:and=or"),
            ("'and'", "'and'"),
            ("\"NOT\"", "'NOT'"),
            ("'web-1'", "web-1"),
            ("'web 1'", "'web 1'"),
            ("'!x'", "'!x'"),
            ("web-[!1-3]", "web-[!1-3]"),
            ("'a[]]b'", "a[]]b"),
            ("label", "label"),
            ("android", "android"),
            ("((a))", "a"),
            ("(a or b) or c", "(a or b) or c"),
            ("a or (b or c)", "a or (b or c)"),
            ("a or b and c", "a or b and c"),
            ("(a or b) and c", "(a or b) and c"),
            ("(a and b) and c", "(a and b) and c"),
            ("a and (not b)", "a and not b"),
            ("not (a and b)", "not (a and b)"),
            ("not (a,b)", "not a,b"),
            ("  a\tand\nb  ", "a and b"),
        ];
        for (input, want) in cases {
            let expr = parse(input).unwrap_or_else(|e| panic!("{input:?} failed to parse: {e}"));
            assert_eq!(expr.to_string(), *want, "canonical form of {input:?}");
            assert_eq!(parse(want).as_ref(), Ok(&expr), "{want:?} must re-parse");
        }
    }

    #[test]
    fn errors_name_the_column_and_what_went_wrong() {
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let deep_not = format!("{}a", "not ".repeat(MAX_DEPTH + 1));
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty target expression; use '*' for every drone"),
            (" \t ", 1, "empty target expression"),
            // Unbalanced parentheses.
            (
                "(web-1",
                7,
                "expected 'and', 'or' or ')' to close the '(' at column 1 but found end of input",
            ),
            ("(a or (b)", 10, "to close the '(' at column 1"),
            (
                "web-1)",
                6,
                "expected 'and', 'or' or end of input but found ')'; there is no '('",
            ),
            ("(a or b))", 9, "found ')'"),
            (
                "()",
                2,
                "expected a drone name, glob, 'label:' or '(' but found ')'",
            ),
            ("(a b)", 4, "to close the '(' at column 1 but found 'b'"),
            // Dangling operators.
            (
                "web-1 and",
                10,
                "expected a drone name, glob, 'label:' or '(' but found end of input; 'and' must be followed",
            ),
            ("web-1 or", 9, "'or' must be followed by an expression"),
            ("not", 4, "'not' must be followed by an expression"),
            ("(a or)", 6, "but found ')'; 'or' must be followed"),
            (
                "label:role=web and and web-2",
                20,
                "expected a drone name, glob, 'label:' or '(' but found 'and'",
            ),
            ("and web-1", 1, "but found 'and'"),
            ("OR", 1, "but found 'OR'"),
            ("not ()", 6, "found ')'"),
            // Labels.
            (
                "label:",
                7,
                "expected a label key after 'label:' but found end of input",
            ),
            ("label: role", 7, "found whitespace; no spaces are allowed"),
            (
                "label:=web",
                7,
                "expected a label key after 'label:' but found '='",
            ),
            ("label:''=web", 7, "label keys cannot be empty"),
            (
                "label:env=",
                11,
                "expected a label value after '=' but found end of input; to match an empty value write label:env=''",
            ),
            (
                "label:env= prod",
                11,
                "a label value after '=' but found whitespace",
            ),
            (
                "label:env = prod",
                11,
                "found '='; write label matches without spaces",
            ),
            ("label:a=b=c", 10, "unexpected '=' after b"),
            (
                "label:t=10:00",
                11,
                "unexpected ':' after 10; unquoted names",
            ),
            (
                "label:team=sre core",
                16,
                "expected 'and', 'or' or end of input but found 'core'",
            ),
            (
                "label:team=sre'core'",
                15,
                "unexpected ''' after sre; quote a whole",
            ),
            (
                "host:web-1",
                1,
                "unknown prefix 'host:'; the only prefix is 'label:'",
            ),
            // Unknown characters.
            ("web-1 & web-2", 7, "found '&'; use 'and'"),
            ("web-1 && web-2", 7, "use 'and'"),
            ("web-1 || web-2", 7, "use 'or'"),
            ("web-1&web-2", 6, "unexpected '&' after web-1; use 'and'"),
            ("!web-1", 1, "found '!'; use 'not'"),
            ("web-1 !web-2", 7, "use 'and not'"),
            ("web@1", 4, "unexpected '@' after web"),
            ("web-1=x", 6, "match labels with 'label:key=value'"),
            ("é", 1, "found 'é'"),
            (
                "web-1 $",
                7,
                "expected 'and', 'or' or end of input but found '$'",
            ),
            // Trailing input.
            (
                "web-1 web-2",
                7,
                "expected 'and', 'or' or end of input but found 'web-2'",
            ),
            ("web-1 not web-2", 7, "did you mean 'and not'?"),
            ("(a),b", 4, "found ','; ',' can only join names"),
            // Lists.
            (
                "web-1,",
                7,
                "expected a drone name, glob or 'label:' after ',' but found end of input",
            ),
            (",web-1", 1, "found ','"),
            ("web-1,,web-2", 7, "after ',' but found ','"),
            ("web-1,(db-1)", 7, "after ',' but found '('"),
            ("web-1, not db-1", 8, "after ',' but found 'not'"),
            // Quotes.
            ("''", 1, "found an empty quoted string"),
            (
                "label:team='sre core",
                21,
                "expected a closing ' for the quote at column 12 but found end of input",
            ),
            ("'a\\", 4, "expected a closing '"),
            ("'a\\nb'", 3, "unsupported escape '\\n'"),
            // Globs.
            (
                "web-[12",
                8,
                "expected ']' to close the '[' at column 5 but found end of input",
            ),
            (
                "web-[1 or 2]",
                7,
                "to close the '[' at column 5 but found whitespace",
            ),
            (
                "'web-[12'",
                9,
                "to close the '[' at column 6 but found the end of the quoted string",
            ),
            ("web-[2-1]", 6, "invalid range '2-1'"),
            ("'\\'[b-a]'", 5, "invalid range 'b-a'"),
            // Nesting.
            (deep.as_str(), MAX_DEPTH + 1, "nested too deeply"),
            (deep_not.as_str(), 4 * MAX_DEPTH + 1, "nested too deeply"),
        ];
        for (input, column, fragment) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.column, *column, "column for {input:?}: {err}");
            assert!(
                err.message.contains(fragment),
                "message for {input:?} should contain {fragment:?}, got {:?}",
                err.message
            );
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let parens = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse(&parens).map(|e| e.to_string()), Ok("a".to_string()));
        let nots = format!("{}a", "not ".repeat(MAX_DEPTH));
        assert!(parse(&nots).is_ok());
        // Long flat chains are not nesting.
        let chain = vec!["a"; 10_000].join(" or ");
        assert!(parse(&chain).is_ok());
    }

    #[test]
    fn error_display_and_render() {
        let err = parse("web-1 and").unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a drone name, glob, 'label:' or '(' but found end of input; \
             'and' must be followed by an expression at column 10"
        );
        assert_eq!(err.render("web-1 and"), "web-1 and\n         ^");

        let err = parse("\tweb-1 & x").unwrap_err();
        assert_eq!(err.column, 8);
        assert_eq!(err.render("\tweb-1 & x"), "\tweb-1 & x\n\t      ^");

        let err = parse("a\nb").unwrap_err();
        assert_eq!(err.render("a\nb"), "a b\n  ^");

        let err = parse("").unwrap_err();
        assert_eq!(err.render(""), "\n^");
    }

    #[test]
    fn a_long_input_is_rendered_around_the_column_only() {
        let input = format!(
            "{}web-1 & {}",
            "web-1 or ".repeat(1000),
            "web-2 or ".repeat(1000)
        );
        let err = parse(&input).unwrap_err();
        let rendered = err.render(&input);
        let (line, caret) = rendered.split_once('\n').unwrap();
        assert_eq!(line.chars().count(), 1 + RENDER_CONTEXT * 2 + 1, "{line}");
        assert!(line.starts_with('…') && line.ends_with('…'), "{line}");
        // The caret is under the character at the column.
        let under = line.chars().nth(caret.chars().count() - 1).unwrap();
        let at = input.chars().nth(err.column - 1).unwrap();
        assert_eq!(under, at, "{rendered}");

        // Near the start, nothing is cut before.
        let input = format!("web-1 and{}", " x".repeat(1000));
        let err = parse(&input).unwrap_err();
        let rendered = err.render(&input);
        assert!(rendered.starts_with("web-1 and x"), "{rendered}");
        assert!(
            rendered.lines().next().unwrap().ends_with('…'),
            "{rendered}"
        );
    }

    #[test]
    fn from_str_and_serde_use_the_canonical_string() {
        let expr: TargetExpr = "web-* AND NOT web-3".parse().unwrap();
        let json = serde_json::to_string(&expr).unwrap();
        assert_eq!(json, "\"web-* and not web-3\"");
        assert_eq!(serde_json::from_str::<TargetExpr>(&json).unwrap(), expr);
        let err = serde_json::from_str::<TargetExpr>("\"web-1 and\"").unwrap_err();
        assert!(err.to_string().contains("at column 10"), "{err}");
    }

    #[test]
    fn drone_ids() {
        let longest = "x".repeat(63);
        let too_long = "x".repeat(64);
        for ok in ["a", "web-1", "Web_1.prod", "0", longest.as_str()] {
            assert_eq!(validate_drone_id(ok), Ok(()), "{ok:?}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            (too_long.as_str(), "64 characters long; at most 63"),
            ("-web", "must start with a letter or digit, not '-'"),
            (".web", "must start with a letter or digit"),
            ("_web", "must start with a letter or digit"),
            ("web 1", "contains ' ' at position 4"),
            ("web/1", "contains '/'"),
            ("wéb", "contains 'é' at position 2"),
            ("web:1", "only letters, digits, '.', '_' and '-'"),
        ];
        for (id, fragment) in cases {
            let err = validate_drone_id(id).expect_err(id);
            assert!(
                err.contains(fragment),
                "{id:?}: {err:?} should contain {fragment:?}"
            );
        }
    }

    // -- property tests -----------------------------------------------------

    /// Reference glob matcher: obviously correct, exponential, fine for tiny
    /// inputs. Only `*`, `?` and literals.
    fn reference_match(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference_match(rest, &text[skip..])),
            Some(('?', rest)) => !text.is_empty() && reference_match(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && reference_match(rest, &text[1..]),
        }
    }

    fn glob(source: &str) -> Glob {
        Glob::new(source).unwrap()
    }

    /// Globs built to stress printing: quotes, backslashes, spaces,
    /// keywords, classes, separators and non-ASCII.
    fn any_glob_source() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-z0-9._/-]{1,3}",
            1 => Just("*".to_string()),
            1 => Just("?".to_string()),
            1 => Just("[a-c]".to_string()),
            1 => Just("[!x-z]".to_string()),
            1 => Just("[]]".to_string()),
            1 => Just("[^*[]".to_string()),
            1 => Just(" ".to_string()),
            1 => Just("'".to_string()),
            1 => Just("\"".to_string()),
            1 => Just("\\".to_string()),
            1 => Just("!".to_string()),
            1 => Just("]".to_string()),
            1 => Just(":".to_string()),
            1 => Just(",".to_string()),
            1 => Just("=".to_string()),
            1 => Just("(".to_string()),
            1 => Just("é".to_string()),
            1 => Just("and".to_string()),
            1 => Just("NOT".to_string()),
            1 => Just("Or".to_string()),
            1 => Just("label".to_string()),
        ];
        vec(piece, 1..4).prop_map(|pieces| pieces.concat())
    }

    fn any_term() -> BoxedStrategy<Term> {
        prop_oneof![
            any_glob_source().prop_map(|s| Term::Name(glob(&s))),
            (
                any_glob_source(),
                proptest::option::of(prop_oneof![any_glob_source(), Just(String::new())])
            )
                .prop_map(|(k, v)| Term::Label {
                    key: glob(&k),
                    value: v.as_deref().map(glob),
                }),
        ]
        .boxed()
    }

    /// Terms over a tiny alphabet so random subjects actually match them.
    fn small_term() -> BoxedStrategy<Term> {
        let small_glob = prop_oneof!["[abAB*?]{1,3}", "[ab]?\\[!?[ab]\\][ab*]?"];
        prop_oneof![
            small_glob.clone().prop_map(|s| Term::Name(glob(&s))),
            ("[ab*]", proptest::option::of(small_glob)).prop_map(|(k, v)| Term::Label {
                key: glob(&k),
                value: v.as_deref().map(glob),
            }),
        ]
        .boxed()
    }

    fn node(term: BoxedStrategy<Term>) -> impl Strategy<Value = Node> {
        let leaf = vec(term, 1..4).prop_map(Node::Any);
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|n| Node::Not(Box::new(n))),
                vec(inner.clone(), 2..4).prop_map(Node::And),
                vec(inner, 2..4).prop_map(Node::Or),
            ]
        })
    }

    fn small_expr() -> impl Strategy<Value = TargetExpr> {
        node(small_term()).prop_map(|root| TargetExpr { root })
    }

    #[derive(Debug)]
    struct Subject {
        id: String,
        hostname: String,
        labels: BTreeMap<String, String>,
    }

    impl Subject {
        fn view(&self) -> TargetSubject<'_> {
            TargetSubject {
                id: &self.id,
                hostname: &self.hostname,
                labels: &self.labels,
            }
        }
    }

    fn subject() -> impl Strategy<Value = Subject> {
        (
            "[abAB]{1,3}",
            "[ab]{0,3}",
            btree_map("[ab]", "[ab]{0,2}", 0..3),
        )
            .prop_map(|(id, hostname, labels)| Subject {
                id,
                hostname,
                labels,
            })
    }

    /// Inputs assembled from grammar fragments, which reach far more parser
    /// states than arbitrary strings do.
    fn grammarish_input() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("and"),
            Just("OR"),
            Just("not"),
            Just("label:"),
            Just("("),
            Just(")"),
            Just(","),
            Just(" "),
            Just("'"),
            Just("\""),
            Just("\\"),
            Just("="),
            Just("a"),
            Just("b*"),
            Just("?"),
            Just("["),
            Just("]"),
            Just("!"),
            Just("^"),
            Just("-"),
            Just("x:"),
            Just("é"),
            Just("\t"),
        ];
        vec(token, 0..14).prop_map(|tokens| tokens.concat())
    }

    fn check_parse_outcome(input: &str) -> Result<(), TestCaseError> {
        match parse(input) {
            Ok(expr) => {
                let printed = expr.to_string();
                let reparsed = parse(&printed);
                prop_assert_eq!(reparsed.as_ref(), Ok(&expr), "printed as {:?}", printed);
                prop_assert_eq!(reparsed.map(|e| e.to_string()), Ok(printed));
            }
            Err(err) => {
                let len = input.chars().count();
                prop_assert!(
                    (1..=len + 1).contains(&err.column),
                    "column {} outside 1..={} for {:?}",
                    err.column,
                    len + 1,
                    input
                );
                prop_assert!(!err.message.is_empty());
                let rendered = err.render(input);
                prop_assert!(rendered.ends_with('^'));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn printing_round_trips(root in node(any_term())) {
            let expr = TargetExpr { root };
            let printed = expr.to_string();
            prop_assert_eq!(parse(&printed), Ok(expr), "printed as {:?}", printed);
        }

        #[test]
        fn not_negates(expr in small_expr(), s in subject()) {
            let negated = parse(&format!("not ({expr})")).unwrap();
            prop_assert_eq!(negated.matches(&s.view()), !expr.matches(&s.view()));
        }

        #[test]
        fn and_or_follow_boolean_logic(
            a in small_expr(),
            b in small_expr(),
            c in small_expr(),
            s in subject(),
        ) {
            let (ma, mb, mc) = (a.matches(&s.view()), b.matches(&s.view()), c.matches(&s.view()));
            let and = parse(&format!("({a}) and ({b})")).unwrap();
            prop_assert_eq!(and.matches(&s.view()), ma && mb);
            let or = parse(&format!("({a}) or ({b})")).unwrap();
            prop_assert_eq!(or.matches(&s.view()), ma || mb);
            let mixed = parse(&format!("({a}) or ({b}) and not ({c})")).unwrap();
            prop_assert_eq!(mixed.matches(&s.view()), ma || (mb && !mc));
        }

        #[test]
        fn lists_match_like_or(
            terms in vec(small_term(), 1..5),
            s in subject(),
        ) {
            let list = TargetExpr { root: Node::Any(terms.clone()) };
            let ored = terms.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ");
            prop_assert_eq!(list.matches(&s.view()), parse(&ored).unwrap().matches(&s.view()));
        }

        #[test]
        fn glob_agrees_with_reference(pattern in "[ab*?]{0,6}", text in "[ab]{0,8}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(glob(&pattern).matches(&text, false), reference_match(&p, &t));
        }

        #[test]
        fn name_matching_ignores_ascii_case(pattern in "[abAB*?]{1,4}", text in "[abAB]{0,5}") {
            let g = glob(&pattern);
            prop_assert_eq!(
                g.matches(&text, true),
                glob(&pattern.to_ascii_lowercase()).matches(&text.to_ascii_lowercase(), false)
            );
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(input in any::<String>()) {
            check_parse_outcome(&input)?;
        }

        #[test]
        fn parse_never_panics_on_grammar_fragments(input in grammarish_input()) {
            check_parse_outcome(&input)?;
        }
    }
}
