//! Just enough of SQLite's SQL lexer to normalize statements and to take a `CREATE TABLE`
//! apart: the pragmas say what columns and keys a table has, but not its CHECK constraints,
//! column collations, generated-column expressions or AUTOINCREMENT; those come from the text.

/// One token of SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A bare word: keyword or identifier.
    Word(String),
    /// A quoted identifier (`"x"`, `` `x` `` or `[x]`), unquoted.
    Quoted(String),
    /// A string literal, with its quotes, as written.
    Str(String),
    /// A number, blob literal (`x'..'`) or bound parameter, as written.
    Lit(String),
    /// Punctuation or an operator.
    Punct(String),
}

impl Token {
    /// True when the token is the keyword `kw` (case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// True when the token is the punctuation `p`.
    pub fn is_punct(&self, p: &str) -> bool {
        matches!(self, Token::Punct(x) if x == p)
    }

    /// The name a word or quoted identifier stands for.
    pub fn ident(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            // SQLite accepts a string literal where a name is expected ('t' as a table name).
            Token::Str(s) => s.get(1..s.len().saturating_sub(1)),
            _ => None,
        }
    }
}

/// The SQL text could not be tokenized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {what} in SQL text")]
pub struct LexError {
    /// What was left open: a string, a quoted name or a comment.
    pub what: &'static str,
}

/// Splits SQL text into tokens, dropping whitespace and comments.
pub fn tokenize(sql: &str) -> Result<Vec<Token>, LexError> {
    Ok(tokenize_spans(sql)?.into_iter().map(|(t, _)| t).collect())
}

/// Like [`tokenize`], with each token's byte range in `sql`.
pub fn tokenize_spans(sql: &str) -> Result<Vec<(Token, std::ops::Range<usize>)>, LexError> {
    let chars: Vec<char> = sql.chars().collect();
    // Byte offset of each char index (and of the end).
    let mut offsets: Vec<usize> = sql.char_indices().map(|(b, _)| b).collect();
    offsets.push(sql.len());
    let mut out: Vec<Token> = Vec::new();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    let n = chars.len();
    let take_quoted = |i: &mut usize, close: char| -> Option<String> {
        // Opening quote at *i; a doubled closing quote is an escaped one.
        let mut s = String::new();
        let mut j = *i + 1;
        while j < n {
            if chars[j] == close {
                if close != ']' && j + 1 < n && chars[j + 1] == close {
                    s.push(close);
                    j += 2;
                    continue;
                }
                *i = j + 1;
                return Some(s);
            }
            s.push(chars[j]);
            j += 1;
        }
        None
    };
    while i < n {
        let c = chars[i];
        let before = out.len();
        let start = i;
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && i + 1 < n && chars[i + 1] == '-' {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && i + 1 < n && chars[i + 1] == '*' {
            let mut j = i + 2;
            loop {
                if j + 1 >= n {
                    return Err(LexError { what: "comment" });
                }
                if chars[j] == '*' && chars[j + 1] == '/' {
                    break;
                }
                j += 1;
            }
            i = j + 2;
        } else if c == '\'' {
            let s = take_quoted(&mut i, '\'').ok_or(LexError { what: "string" })?;
            out.push(Token::Str(format!("'{}'", s.replace('\'', "''"))));
        } else if c == '"' || c == '`' || c == '[' {
            let close = match c {
                '[' => ']',
                other => other,
            };
            let s = take_quoted(&mut i, close).ok_or(LexError {
                what: "quoted name",
            })?;
            out.push(Token::Quoted(s));
        } else if (c == 'x' || c == 'X') && i + 1 < n && chars[i + 1] == '\'' {
            let mut j = i + 1;
            let s = take_quoted(&mut j, '\'').ok_or(LexError { what: "blob" })?;
            out.push(Token::Lit(format!("X'{}'", s.to_ascii_uppercase())));
            i = j;
        } else if c.is_alphabetic() || c == '_' || !c.is_ascii() {
            let start = i;
            while i < n
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '$'
                    || !chars[i].is_ascii())
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < n && chars[i + 1].is_ascii_digit()) {
            let start = i;
            while i < n && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                // Exponent signs: 1e-5.
                if (chars[i] == 'e' || chars[i] == 'E')
                    && i + 1 < n
                    && (chars[i + 1] == '-' || chars[i + 1] == '+')
                {
                    i += 1;
                }
                i += 1;
            }
            out.push(Token::Lit(chars[start..i].iter().collect()));
        } else if c == '?' || c == ':' || c == '@' || c == '$' {
            let start = i;
            i += 1;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Lit(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(n)].iter().collect();
            let p =
                if ["||", "<=", ">=", "==", "!=", "<>", "<<", ">>", "->"].contains(&two.as_str()) {
                    if two == "->" && i + 2 < n && chars[i + 2] == '>' {
                        "->>".to_string()
                    } else {
                        two
                    }
                } else {
                    c.to_string()
                };
            i += p.chars().count();
            out.push(Token::Punct(p));
        }
        if out.len() > before {
            spans.push(offsets[start]..offsets[i.min(n)]);
        }
    }
    Ok(out.into_iter().zip(spans).collect())
}

/// SQLite's keywords (<https://www.sqlite.org/lang_keywords.html>).
const KEYWORDS: &[&str] = &[
    "ABORT",
    "ACTION",
    "ADD",
    "AFTER",
    "ALL",
    "ALTER",
    "ALWAYS",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "ATTACH",
    "AUTOINCREMENT",
    "BEFORE",
    "BEGIN",
    "BETWEEN",
    "BY",
    "CASCADE",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "COMMIT",
    "CONFLICT",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "CURRENT",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "DATABASE",
    "DEFAULT",
    "DEFERRABLE",
    "DEFERRED",
    "DELETE",
    "DESC",
    "DETACH",
    "DISTINCT",
    "DO",
    "DROP",
    "EACH",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXCLUDE",
    "EXCLUSIVE",
    "EXISTS",
    "EXPLAIN",
    "FAIL",
    "FILTER",
    "FIRST",
    "FOLLOWING",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "GENERATED",
    "GLOB",
    "GROUP",
    "GROUPS",
    "HAVING",
    "IF",
    "IGNORE",
    "IMMEDIATE",
    "IN",
    "INDEX",
    "INDEXED",
    "INITIALLY",
    "INNER",
    "INSERT",
    "INSTEAD",
    "INTERSECT",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "KEY",
    "LAST",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MATCH",
    "MATERIALIZED",
    "NATURAL",
    "NO",
    "NOT",
    "NOTHING",
    "NOTNULL",
    "NULL",
    "NULLS",
    "OF",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OTHERS",
    "OUTER",
    "OVER",
    "PARTITION",
    "PLAN",
    "PRAGMA",
    "PRECEDING",
    "PRIMARY",
    "QUERY",
    "RAISE",
    "RANGE",
    "RECURSIVE",
    "REFERENCES",
    "REGEXP",
    "REINDEX",
    "RELEASE",
    "RENAME",
    "REPLACE",
    "RESTRICT",
    "RETURNING",
    "RIGHT",
    "ROLLBACK",
    "ROW",
    "ROWS",
    "SAVEPOINT",
    "SELECT",
    "SET",
    "TABLE",
    "TEMP",
    "TEMPORARY",
    "THEN",
    "TIES",
    "TO",
    "TRANSACTION",
    "TRIGGER",
    "UNBOUNDED",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USING",
    "VACUUM",
    "VALUES",
    "VIEW",
    "VIRTUAL",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
    "WITHOUT",
];

/// True for one of SQLite's keywords (case-insensitive).
pub fn is_keyword(w: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

fn simple_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The canonical form of one token: keywords upper case, identifiers unquoted when quoting
/// adds nothing (SQLite's own ALTER TABLE RENAME writes the new name quoted).
fn canon(t: &Token) -> String {
    match t {
        Token::Word(w) if is_keyword(w) => w.to_ascii_uppercase(),
        Token::Word(w) => w.clone(),
        Token::Quoted(q) if simple_ident(q) => {
            if is_keyword(q) {
                q.to_ascii_uppercase()
            } else {
                q.clone()
            }
        }
        Token::Quoted(q) => format!("\"{}\"", q.replace('"', "\"\"")),
        Token::Str(s) | Token::Lit(s) | Token::Punct(s) => s.clone(),
    }
}

/// Joins tokens in canonical form: one space between tokens, none inside parentheses, before
/// commas and around dots.
pub fn render(tokens: &[Token]) -> String {
    let mut out = String::new();
    let mut prev: Option<&Token> = None;
    for t in tokens {
        if let Some(p) = prev {
            let tight = p.is_punct("(")
                || p.is_punct(".")
                || t.is_punct(")")
                || t.is_punct(",")
                || t.is_punct(".")
                || t.is_punct(";")
                || (t.is_punct("(") && matches!(p, Token::Word(_) | Token::Quoted(_)));
            if !tight {
                out.push(' ');
            }
        }
        out.push_str(&canon(t));
        prev = Some(t);
    }
    out
}

/// Canonical text of an SQL statement or expression (see [`render`]); a text that does not
/// tokenize is kept with its whitespace folded.
pub fn normalize(sql: &str) -> String {
    match tokenize(sql) {
        Ok(t) => {
            let end = t
                .iter()
                .rposition(|x| !x.is_punct(";"))
                .map_or(0, |p| p + 1);
            render(&t[..end])
        }
        Err(_) => sql.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The text with every comment outside literals replaced by one space; everything else
/// (whitespace, literals, quoted names) as written. Text that does not tokenize is returned
/// as it is.
pub fn strip_comments(sql: &str) -> String {
    let Ok(spans) = tokenize_spans(sql) else {
        return sql.to_string();
    };
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    let ends = spans
        .iter()
        .map(|(_, s)| s.clone())
        .chain(std::iter::once(sql.len()..sql.len()));
    for span in ends {
        // Between two tokens there is only whitespace and comments.
        let mut rest = &sql[at..span.start];
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("--") {
                out.push(' ');
                // A line comment ends at the newline, which stays.
                rest = r.find('\n').map_or("", |i| &r[i..]);
            } else if let Some(r) = rest.strip_prefix("/*") {
                out.push(' ');
                rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out.push_str(&sql[span.clone()]);
        at = span.end;
    }
    out
}

/// The statement as written, without what follows its last token (SQLite may store a
/// trailing comment with it, and a `--` comment at the very end would swallow the `;` a
/// script puts after the statement). Text that does not tokenize is returned as it is.
pub fn statement_text(sql: &str) -> &str {
    match tokenize_spans(sql) {
        Ok(spans) => match spans.iter().rev().find(|(t, _)| !t.is_punct(";")) {
            Some((_, last)) => &sql[..last.end],
            None => sql,
        },
        Err(_) => sql,
    }
}

/// Index of the parenthesis closing the one opened at `open`.
pub fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// Splits tokens at top-level commas.
pub fn split_commas(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if t.is_punct(",") && depth == 0 {
            out.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    if start < tokens.len() {
        out.push(&tokens[start..]);
    }
    out
}

/// A `CREATE TABLE` statement taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTable {
    /// Index of the token holding the table's name (for renaming it in the text).
    pub name_token: usize,
    /// Column definitions: (name, the definition's tokens).
    pub columns: Vec<(String, Vec<Token>)>,
    /// Table constraints (`PRIMARY KEY (..)`, `UNIQUE`, `CHECK`, `FOREIGN KEY`).
    pub constraints: Vec<Vec<Token>>,
    /// `WITHOUT ROWID` was given.
    pub without_rowid: bool,
    /// `STRICT` was given.
    pub strict: bool,
    /// The tokens of the whole statement.
    pub tokens: Vec<Token>,
    /// Byte range of each token in `text`.
    pub spans: Vec<std::ops::Range<usize>>,
    /// Byte range of each column definition in `text` (parallel to `columns`).
    pub column_spans: Vec<std::ops::Range<usize>>,
    /// The statement.
    pub text: String,
}

const CONSTRAINT_STARTS: &[&str] = &["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];

/// Takes a `CREATE TABLE` statement apart. `None` when it is not one (or is `CREATE TABLE
/// .. AS SELECT`, which has no definitions to read).
pub fn parse_create_table(sql: &str) -> Option<CreateTable> {
    let (tokens, spans): (Vec<Token>, Vec<std::ops::Range<usize>>) =
        tokenize_spans(sql).ok()?.into_iter().unzip();
    let mut i = 0;
    if !tokens.first()?.is_kw("CREATE") {
        return None;
    }
    i += 1;
    if tokens.get(i)?.is_kw("TEMP") || tokens.get(i)?.is_kw("TEMPORARY") {
        i += 1;
    }
    if !tokens.get(i)?.is_kw("TABLE") {
        return None;
    }
    i += 1;
    if tokens.get(i)?.is_kw("IF") {
        i += 3;
    }
    let mut name_token = i;
    if tokens.get(i + 1).is_some_and(|t| t.is_punct(".")) {
        name_token = i + 2;
    }
    let open = name_token + 1;
    if !tokens.get(open)?.is_punct("(") {
        return None;
    }
    let close = matching_paren(&tokens, open)?;
    let mut out = CreateTable {
        name_token,
        ..CreateTable::default()
    };
    let mut at = open + 1;
    for item in split_commas(&tokens[open + 1..close]) {
        let first = item.first()?;
        if CONSTRAINT_STARTS.iter().any(|k| first.is_kw(k)) {
            out.constraints.push(item.to_vec());
        } else {
            out.columns
                .push((first.ident()?.to_string(), item.to_vec()));
            out.column_spans
                .push(spans.get(at)?.start..spans.get(at + item.len() - 1)?.end);
        }
        at += item.len() + 1;
    }
    for t in &tokens[close + 1..] {
        if t.is_kw("ROWID") {
            out.without_rowid = true;
        }
        if t.is_kw("STRICT") {
            out.strict = true;
        }
    }
    out.tokens = tokens;
    out.spans = spans;
    out.text = sql.to_string();
    Some(out)
}

/// The tokens inside the parentheses that follow keyword `kw` in `item` (for `CHECK (..)`
/// and `AS (..)`), every occurrence.
pub fn paren_after(item: &[Token], kw: &str) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < item.len() {
        if item[i].is_kw(kw)
            && item.get(i + 1).is_some_and(|t| t.is_punct("("))
            && let Some(close) = matching_paren(item, i + 1)
        {
            out.push(item[i + 2..close].to_vec());
            i = close + 1;
            continue;
        }
        // Skip nested parentheses so a CHECK inside an expression is not taken twice.
        i += 1;
    }
    out
}

/// The word after `COLLATE` at the top level of a column definition.
pub fn collation(item: &[Token]) -> Option<String> {
    let mut depth = 0i32;
    for (i, t) in item.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && t.is_kw("COLLATE") {
            return item.get(i + 1)?.ident().map(str::to_string);
        }
    }
    None
}

/// True when the keyword appears at the top level of the tokens.
pub fn has_kw(item: &[Token], kw: &str) -> bool {
    let mut depth = 0i32;
    item.iter().any(|t| {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        }
        depth == 0 && t.is_kw(kw)
    })
}

/// True when the tokens mention the identifier (case-insensitive), quoted or not.
pub fn mentions(tokens: &[Token], name: &str) -> bool {
    tokens.iter().any(|t| {
        matches!(t, Token::Word(_) | Token::Quoted(_))
            && t.ident().is_some_and(|i| i.eq_ignore_ascii_case(name))
    })
}

/// The statement's text with its table name replaced (quoted) and any schema qualifier
/// dropped; everything else as written.
pub fn rename_table_text(ct: &CreateTable, new_name: &str) -> String {
    let Some(name) = ct.spans.get(ct.name_token) else {
        return ct.text.clone();
    };
    let start = if ct.name_token >= 2 && ct.tokens[ct.name_token - 1].is_punct(".") {
        ct.spans[ct.name_token - 2].start
    } else {
        name.start
    };
    format!(
        "{}\"{}\"{}",
        &ct.text[..start],
        new_name.replace('"', "\"\""),
        &ct.text[name.end..]
    )
}

/// The text of a column definition as written.
pub fn column_text<'a>(ct: &'a CreateTable, name: &str) -> Option<&'a str> {
    let i = ct
        .columns
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(name))?;
    ct.text.get(ct.column_spans.get(i)?.clone())
}

/// Joins tokens back into executable SQL, keeping every identifier quoted as written (unlike
/// [`render`], whose output is for comparison).
pub fn raw(tokens: &[Token]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match t {
            Token::Quoted(q) => out.push_str(&format!("\"{}\"", q.replace('"', "\"\""))),
            Token::Word(s) | Token::Str(s) | Token::Lit(s) | Token::Punct(s) => out.push_str(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_folds_case_quotes_and_spacing() {
        assert_eq!(
            normalize("create index i on \"t\" ( \"b\" , [c])  where  x>1;"),
            normalize("CREATE INDEX i ON t(b,c) WHERE x > 1")
        );
        assert_eq!(
            normalize("SELECT 'a  b' -- c\n FROM t"),
            "SELECT 'a  b' FROM t"
        );
        assert_ne!(normalize("SELECT 'a'"), normalize("SELECT 'A'"));
        assert_eq!(normalize("\"odd name\""), "\"odd name\"");
    }

    #[test]
    fn create_table_is_taken_apart() {
        let ct = parse_create_table(
            "CREATE TABLE IF NOT EXISTS main.t(id INTEGER PRIMARY KEY AUTOINCREMENT, \
             n TEXT COLLATE nocase CHECK (length(n) > 0), g AS (n || 'x') STORED, \
             CONSTRAINT c CHECK (id > 0), UNIQUE (n)) STRICT",
        )
        .unwrap();
        assert_eq!(ct.columns.len(), 3);
        assert_eq!(ct.constraints.len(), 2);
        assert!(ct.strict && !ct.without_rowid);
        assert_eq!(collation(&ct.columns[1].1).as_deref(), Some("nocase"));
        assert_eq!(paren_after(&ct.columns[1].1, "CHECK").len(), 1);
        assert_eq!(render(&paren_after(&ct.columns[2].1, "AS")[0]), "n || 'x'");
        assert!(has_kw(&ct.columns[0].1, "AUTOINCREMENT"));
        assert!(
            rename_table_text(&ct, "new t")
                .starts_with("CREATE TABLE IF NOT EXISTS \"new t\"(id INTEGER")
        );
        assert_eq!(
            column_text(&ct, "n"),
            Some("n TEXT COLLATE nocase CHECK (length(n) > 0)")
        );
    }

    #[test]
    fn comments_go_and_literals_stay() {
        assert_eq!(
            strip_comments("a /* x */ INT -- y\n, 'p -- q /* r */'"),
            "a   INT  \n, 'p -- q /* r */'"
        );
        assert_eq!(
            statement_text("CREATE INDEX i ON t(a) -- c\n"),
            "CREATE INDEX i ON t(a)"
        );
        assert_eq!(statement_text("SELECT '--' ; -- x"), "SELECT '--'");
    }

    #[test]
    fn unterminated_text_is_an_error() {
        assert!(tokenize("SELECT 'a").is_err());
        assert!(tokenize("SELECT /* a").is_err());
        assert!(tokenize("SELECT \"a").is_err());
    }
}
