//! Filter expressions (`--expr`), on the model of nextest's filtersets: which scenarios a
//! command works on, said as a small boolean language over what each scenario file
//! declares.
//!
//! ```text
//! expr     := or
//! or       := and (("or" | "|") and)*
//! and      := not (("and" | "&") not | "-" not)*      a - b: in a and not in b
//! not      := ("not" | "!") not | "(" expr ")" | "all()" | "none()" | function
//! function := ("name" | "path" | "tag" | "target" | "requires") "(" matcher ")"
//! matcher  := "=" text (whole) | "~" text (part; the default) | "/" regex "/"
//! ```
//!
//! `name()` matches the scenario's name, `path()` its file (as given, and as shown
//! relative to the directory given), `tag()` any of its tags, `target()` any target it
//! applies to (`mock`, `real`), `requires()` any host requirement (`root`, `fuse`, `erofs`,
//! `mkfs-erofs`, `fscache`). A matcher's text runs to its closing parenthesis; `\)` and
//! `\\` put those characters in it. Example: `not requires(root) and (tag(failover) | path(/^faults/))`.

use regex::Regex;

/// A parsed filter expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    All,
    None,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Matches(Field, Matcher),
}

/// What a function looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Name,
    Path,
    Tag,
    Target,
    Requires,
}

impl Field {
    const ALL: [(&'static str, Field); 5] = [
        ("name", Field::Name),
        ("path", Field::Path),
        ("tag", Field::Tag),
        ("target", Field::Target),
        ("requires", Field::Requires),
    ];
}

/// How a function's argument matches a value.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Equal(String),
    Contains(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Equal(text) => value == text,
            Self::Contains(text) => value.contains(text.as_str()),
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

/// What a scenario offers an expression.
pub(crate) struct Facts<'a> {
    pub name: &'a str,
    /// The file as given, and as shown relative to the directory given.
    pub paths: [&'a str; 2],
    pub tags: &'a [String],
    pub targets: Vec<String>,
    pub requires: Vec<String>,
}

impl Expr {
    /// Whether the scenario with these facts is selected.
    pub fn selects(&self, facts: &Facts<'_>) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Not(inner) => !inner.selects(facts),
            Self::And(a, b) => a.selects(facts) && b.selects(facts),
            Self::Or(a, b) => a.selects(facts) || b.selects(facts),
            Self::Matches(field, matcher) => match field {
                Field::Name => matcher.matches(facts.name),
                Field::Path => facts.paths.iter().any(|p| matcher.matches(p)),
                Field::Tag => facts.tags.iter().any(|t| matcher.matches(t)),
                Field::Target => facts.targets.iter().any(|t| matcher.matches(t)),
                Field::Requires => facts.requires.iter().any(|r| matcher.matches(r)),
            },
        }
    }
}

/// Why an expression cannot be read: what, and at which character (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub(crate) struct ExprError {
    pub expr: String,
    pub at: usize,
    pub message: String,
}

/// The longest expression read: a selection, not a program.
const MAX_EXPR: usize = 4096;
/// How deep parentheses and `not`s may nest: past it, a hostile expression would cost
/// the parser's stack.
const MAX_DEPTH: usize = 64;

/// Parses `text` as a filter expression.
pub(crate) fn parse(text: &str) -> Result<Expr, ExprError> {
    let mut parser = Parser { text, chars: text.char_indices().collect(), at: 0, depth: 0 };
    if text.len() > MAX_EXPR {
        return Err(parser.error(format!("longer than {MAX_EXPR} bytes")));
    }
    let expr = parser.or()?;
    parser.skip_space();
    if parser.at < parser.chars.len() {
        return Err(parser.error("expected `and`, `or`, `-` or the end".into()));
    }
    Ok(expr)
}

struct Parser<'t> {
    text: &'t str,
    chars: Vec<(usize, char)>,
    /// Index into `chars`.
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: String) -> ExprError {
        ExprError { expr: self.text.to_owned(), at: self.at + 1, message }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).map(|&(_, c)| c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// The word (letters, digits, `_`) at the cursor, not consumed.
    fn word(&self) -> String {
        self.chars[self.at..].iter().map(|&(_, c)| c).take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    }

    /// Consumes `symbol`.
    fn eat_symbol(&mut self, symbol: char) -> bool {
        self.skip_space();
        let found = self.peek() == Some(symbol);
        if found {
            self.at += 1;
        }
        found
    }

    /// Consumes `keyword` as a whole word, or the symbol `symbol`.
    fn eat(&mut self, keyword: &str, symbol: char) -> bool {
        self.skip_space();
        if self.peek() == Some(symbol) {
            self.at += 1;
            return true;
        }
        if self.word() == keyword {
            self.at += keyword.chars().count();
            return true;
        }
        false
    }

    fn nested<T>(&mut self, inner: impl FnOnce(&mut Self) -> Result<T, ExprError>) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} deep")));
        }
        let out = inner(self);
        self.depth -= 1;
        out
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("or", '|') {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        loop {
            if self.eat("and", '&') {
                let right = self.not()?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else if self.eat_symbol('-') {
                let right = self.not()?;
                left = Expr::And(Box::new(left), Box::new(Expr::Not(Box::new(right))));
            } else {
                return Ok(left);
            }
        }
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat("not", '!') {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.skip_space();
        if self.peek() == Some('(') {
            self.at += 1;
            let inner = self.nested(Self::or)?;
            self.skip_space();
            if self.peek() != Some(')') {
                return Err(self.error("expected `)`".into()));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.function()
    }

    fn function(&mut self) -> Result<Expr, ExprError> {
        let start = self.at;
        let word = self.word();
        let known: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).chain(["all", "none"]).collect();
        let field = Field::ALL.iter().find(|(n, _)| *n == word).map(|(_, f)| *f);
        if field.is_none() && word != "all" && word != "none" {
            let what = if word.is_empty() { "nothing".to_owned() } else { format!("`{word}`") };
            return Err(self.error(format!("expected a function ({}) or `(`, found {what}", known.join("(), ") + "()")));
        }
        self.at += word.chars().count();
        if self.peek() != Some('(') {
            return Err(self.error(format!("expected `(` after `{word}`")));
        }
        self.at += 1;
        let Some(field) = field else {
            self.skip_space();
            if self.peek() != Some(')') {
                return Err(self.error(format!("`{word}()` takes no argument")));
            }
            self.at += 1;
            return Ok(if word == "all" { Expr::All } else { Expr::None });
        };
        let matcher = self.matcher(start)?;
        Ok(Expr::Matches(field, matcher))
    }

    /// The argument up to its `)`, with `\)` and `\\` escaped. What is wrong with it is
    /// said at its start.
    fn matcher(&mut self, function_start: usize) -> Result<Matcher, ExprError> {
        self.skip_space();
        let argument_start = self.at;
        if self.peek() == Some('/') {
            return self.regex(function_start);
        }
        let mut text = String::new();
        loop {
            match self.peek() {
                None => {
                    self.at = function_start;
                    return Err(self.error("this function's `(` is never closed".into()));
                }
                Some(')') => break,
                Some('\\') if matches!(self.chars.get(self.at + 1), Some((_, ')' | '\\'))) => {
                    text.push(self.chars[self.at + 1].1);
                    self.at += 2;
                }
                Some(c) => {
                    text.push(c);
                    self.at += 1;
                }
            }
        }
        let after = self.at + 1;
        self.at = argument_start;
        let text = text.trim();
        let matcher = if let Some(exact) = text.strip_prefix('=') {
            Matcher::Equal(exact.to_owned())
        } else if let Some(part) = text.strip_prefix('~') {
            Matcher::Contains(part.to_owned())
        } else if text.is_empty() {
            return Err(self.error("empty argument: give text, `=text`, `~text` or `/regex/`".into()));
        } else {
            Matcher::Contains(text.to_owned())
        };
        self.at = after;
        Ok(matcher)
    }

    /// A `/regex/` argument: it runs to the `/` that a `)` follows, so that the pattern may
    /// hold parentheses (`/^(faults|mounts)//`).
    fn regex(&mut self, function_start: usize) -> Result<Matcher, ExprError> {
        let argument_start = self.at;
        let rest: Vec<char> = self.chars[self.at + 1..].iter().map(|&(_, c)| c).collect();
        let close = (0..rest.len())
            .find(|&i| rest[i] == '/' && rest[i + 1..].iter().find(|c| !c.is_whitespace()) == Some(&')'));
        let Some(close) = close else {
            self.at = function_start;
            return Err(self.error("this function's `/regex/` is never closed by `/)`".into()));
        };
        let pattern: String = rest[..close].iter().collect();
        // regex matches in linear time and refuses patterns past its size limit, so a
        // hostile pattern can neither hang a selection nor exhaust memory.
        let regex =
            Regex::new(&pattern).map_err(|e| self.error(format!("not a regular expression: /{pattern}/: {e}")))?;
        self.at = argument_start + 1 + close + 1;
        self.skip_space();
        self.at += 1;
        Ok(Matcher::Regex(regex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(name: &'a str, path: &'a str, tags: &'a [String]) -> Facts<'a> {
        Facts {
            name,
            paths: [path, path.trim_start_matches("scenarios/")],
            tags,
            targets: vec!["mock".into()],
            requires: vec!["root".into(), "fuse".into()],
        }
    }

    #[test]
    fn expressions_combine_functions_with_and_or_not_and_difference() {
        let tags = vec!["failover".to_owned(), "fuse".to_owned()];
        let f = facts("failover-live-reader", "scenarios/privileged/failover-live-reader.yaml", &tags);
        let cases = [
            ("all()", true),
            ("none()", false),
            ("name(failover)", true),
            ("name(=failover)", false),
            ("name(=failover-live-reader)", true),
            ("name(~live)", true),
            ("path(/^privileged/)", true),
            ("path(/^faults/)", false),
            ("tag(=fuse)", true),
            ("not requires(root)", false),
            ("!requires(=root)", false),
            ("target(real)", false),
            ("target(mock) and tag(failover)", true),
            ("target(mock) & tag(nothing)", false),
            ("tag(nothing) or name(live)", true),
            ("tag(nothing) | name(nothing)", false),
            ("all() - requires(root)", false),
            ("all() - path(faults/)", true),
            ("not (tag(failover) and requires(fuse))", false),
            ("not tag(=a) and not tag(=b)", true),
            ("(name(x) | name(live)) & !path(/\\.yml$/)", true),
            ("path(/^(privileged|faults)//)", true),
            ("path( /(x)|(y)/ ) or name(=failover-live-reader)", true),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(text, want)| {
                let got = parse(text).unwrap_or_else(|e| panic!("{e}")).selects(&f);
                (got != *want).then(|| format!("{text}: got {got}, want {want}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn matchers_escape_their_closing_parenthesis() {
        let tags = vec!["a)b".to_owned(), "c\\d".to_owned()];
        let f = facts("n", "p.yaml", &tags);
        assert!(parse("tag(=a\\)b)").unwrap().selects(&f));
        assert!(parse("tag(=c\\\\d)").unwrap().selects(&f));
    }

    #[test]
    fn mistakes_are_named_at_their_character() {
        let cases = [
            (
                "nmae(x)",
                1,
                "expected a function (name(), path(), tag(), target(), requires(), all(), none()) or `(`, found `nmae`",
            ),
            ("name(x) and", 12, "expected a function"),
            ("name(x) name(y)", 9, "expected `and`, `or`, `-` or the end"),
            ("(name(x)", 9, "expected `)`"),
            ("name(x", 1, "this function's `(` is never closed"),
            ("name()", 6, "empty argument"),
            ("path(/(/)", 6, "not a regular expression: /(/"),
            ("path(/abc)", 1, "this function's `/regex/` is never closed by `/)`"),
            ("all(x)", 5, "`all()` takes no argument"),
            ("tag x", 4, "expected `(` after `tag`"),
        ];
        for (text, at, message) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.at, at, "{text}: {e}");
            assert!(e.message.starts_with(message), "{text}: {e}");
        }
        let deep = format!("{}name(x){}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nested more than 64 deep"));
        let nots = format!("{}name(x)", "not ".repeat(100));
        assert!(parse(&nots).unwrap_err().message.contains("nested more than 64 deep"));
        assert!(parse(&"a".repeat(5000)).unwrap_err().message.contains("longer than"));
    }
}
