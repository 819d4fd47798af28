//! SQL over the cluster: a query front end whose every accepted query runs pushed down.
//!
//! Text is parsed by `sqlparser` (MySQL dialect) and planned onto the scan and key-lookup
//! API ([`plan`]); [`exec`] runs the plan; [`explain`] prints it before anything runs. The
//! rule (RonSQL's): filters, computed columns, GROUP BY and aggregates over a table run on
//! the data nodes, on every partition in parallel (or on the one partition the bounds name),
//! and an ordered index drives the scan when the WHERE clause bounds its leading columns; a
//! construct the planner cannot run that way is refused with an error naming it and where it
//! starts in the text. What runs in the client is only what comes after the data nodes'
//! work: HAVING, expressions over aggregates, ORDER BY, LIMIT, and the joins' matching and
//! aggregation over rows the data nodes already filtered.
//!
//! Joins: INNER and LEFT joins on equality of columns, where the joined side is reached by
//! its primary key (batched key reads, sent together so every data node serves its share at
//! once), by an ordered index whose leading columns the equalities give (one index scan with
//! a range per distinct key, batched), or is a CTE's result (matched by hash in the client).
//!
//! Expressions and the client's stages run the same pushed-down program (the engine's
//! interpreter, on a table made of the intermediate result's columns), so an expression means
//! the same wherever it runs.

mod access;
mod exec;
mod explain;
mod local;
mod plan;

use engine::row::Value;
use engine::schema::ColumnType;
use sqlparser::ast::{self, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::error::{Error, Result};
use crate::session::Session;

/// Longest statement text accepted.
pub const MAX_STATEMENT_BYTES: usize = 256 << 10;

/// Most tokens in a statement (bounds the depth of the trees the parser builds; see
/// [`crate::expr`]).
pub const MAX_STATEMENT_TOKENS: usize = 8192;

/// Most rows an intermediate result held in the client may have (a CTE's result, a join's
/// input or output): a query over more is refused with a message, never run out of memory.
pub const MAX_CLIENT_ROWS: usize = 1 << 20;

/// A query's result: typed rows.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlRows {
    /// The column names (the alias, or the expression as written).
    pub columns: Vec<String>,
    /// Each column's type.
    pub types: Vec<ColumnType>,
    /// The rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl Session<'_> {
    /// Runs one SQL statement: a SELECT (with WITH, joins, GROUP BY, HAVING, ORDER BY, LIMIT),
    /// or EXPLAIN of one, whose result is the plan as rows of text (column `plan`).
    pub fn sql(&mut self, text: &str) -> Result<SqlRows> {
        let statement = parse(text)?;
        let (explain, query) = match &statement {
            Statement::Query(q) => (false, q.as_ref()),
            Statement::Explain { statement, analyze: false, .. } => match statement.as_ref() {
                Statement::Query(q) => (true, q.as_ref()),
                other => return Err(refused(format!("EXPLAIN of `{}`: only SELECT is explained", cut(other)))),
            },
            other => {
                return Err(refused(format!(
                    "`{}`: the SQL front end runs SELECT and EXPLAIN SELECT (tables are made with `blockwire create-table`)",
                    cut(other)
                )))
            }
        };
        let plan = plan::plan(self, query, crate::expr::clock_micros())?;
        if explain {
            let lines = explain::render(&plan);
            return Ok(SqlRows {
                columns: vec!["plan".into()],
                types: vec![ColumnType::Varchar { max: u32::MAX }],
                rows: lines.into_iter().map(|l| vec![Value::Text(l)]).collect(),
            });
        }
        exec::run(self, &plan)
    }

    /// The plan of a SELECT as text, one line per step, without running it.
    pub fn explain(&mut self, text: &str) -> Result<String> {
        let statement = parse(text)?;
        let Statement::Query(query) = &statement else {
            return Err(refused(format!("`{}`: only SELECT is explained", cut(&statement))));
        };
        let plan = plan::plan(self, query, crate::expr::clock_micros())?;
        Ok(explain::render(&plan).join("\n"))
    }
}

/// Exactly one statement, parsed (a trailing `;` allowed).
fn parse(text: &str) -> Result<Statement> {
    let dialect = MySqlDialect {};
    let tokens = crate::expr::bounded_tokens(text, MAX_STATEMENT_BYTES, MAX_STATEMENT_TOKENS, "statement")?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = parser.parse_statements().map_err(parse_error)?;
    match statements.len() {
        0 => Err(refused("an empty statement")),
        1 => Ok(statements.remove(0)),
        n => Err(refused(format!("{n} statements: give one at a time"))),
    }
}

fn parse_error(e: ParserError) -> Error {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            refused(format!("cannot parse the statement: {m}"))
        }
        ParserError::RecursionLimitExceeded => refused("cannot parse the statement: it nests too deeply"),
    }
}

/// The error of a statement the front end does not run.
pub(crate) fn refused(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

/// A node as SQL, cut to 80 characters.
pub(crate) fn cut(node: &impl std::fmt::Display) -> String {
    let text = node.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// " at line L, column C" of a node, or nothing where the parser kept no position.
pub(crate) fn at(node: &impl ast::Spanned) -> String {
    at_span(node.span())
}

/// " at line L, column C" of a span, or nothing where the parser kept no position.
pub(crate) fn at_span(span: sqlparser::tokenizer::Span) -> String {
    let start = span.start;
    if start.line == 0 {
        String::new()
    } else {
        format!(" at line {}, column {}", start.line, start.column)
    }
}
