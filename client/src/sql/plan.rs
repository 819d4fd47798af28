//! The planner: a parsed SELECT (with its CTEs) into a [`Plan`], or a refusal naming the
//! part that cannot run pushed down and where it starts.
//!
//! Names: every column is resolved against the FROM clause's sources (`alias.column`, or a
//! bare name that exactly one source has) and carried as `alias.column`; aggregate calls
//! become the columns `#a0`, `#a1`, ... of the grouped result and GROUP BY expressions
//! `#g0`, ...; anything else in an aggregating SELECT list, HAVING or ORDER BY that is
//! neither grouped nor aggregated is refused.
//!
//! Access: a WHERE that fixes the whole primary key (equalities or IN lists) becomes key
//! reads; otherwise the ordered index whose leading columns the WHERE bounds best (two points
//! per column fixed by equality or IN, one for a range on the next) drives a range scan, and
//! the data nodes prune to the partitions the bounds name. USE / FORCE / IGNORE INDEX limit
//! the choice (FORCE also over key reads, and with no bound an ordered full index scan). The
//! WHERE terms that use the index stay in the pushed filter too, so a range is only ever an
//! optimisation of what the filter says.

use std::sync::Arc;

use engine::index::Range;
use engine::program::compile::{Expr, Query};
use engine::program::{AggFn, CmpOp};
use engine::row::Value;
use engine::schema::{ColumnType, Table};
use sqlparser::ast::{self, GroupByExpr, JoinConstraint, JoinOperator, SelectItem, SetExpr, TableFactor};

use super::access::{access, order_by_index};
use super::local::{self, and_all, columns, conjuncts, map_children};
use super::{at, cut, refused};
use crate::error::Result;
use crate::expr::{from_ast_in, Context};
use crate::session::Session;

/// A column of a source.
#[derive(Clone, Debug)]
pub(super) struct Col {
    pub alias: String,
    pub name: String,
    pub ty: ColumnType,
}

impl Col {
    /// The name the plan's expressions use: `alias.column`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.alias, self.name)
    }
}

/// A statement's plan: its CTEs in order, then the main SELECT.
#[derive(Debug)]
pub(super) struct Plan {
    pub ctes: Vec<Cte>,
    pub main: Select,
}

/// A CTE: its name and its SELECT (whose visible columns are its columns).
#[derive(Debug)]
pub(super) struct Cte {
    pub name: String,
    pub select: Select,
}

/// One SELECT.
#[derive(Debug)]
pub(super) struct Select {
    pub source: Source,
    pub joins: Vec<Join>,
    /// WHERE terms over several sources, evaluated on the joined rows.
    pub residual: Option<Expr>,
    pub shape: Shape,
    /// (output column, descending).
    pub order: Vec<(usize, bool)>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// The visible output columns' names; outputs after them are ORDER BY's hidden keys.
    pub names: Vec<String>,
    /// Every output's type (visible, then hidden).
    pub types: Vec<ColumnType>,
    /// The scan returns rows in the ORDER BY's order (an ordered index scan).
    pub index_ordered: bool,
}

/// What a SELECT computes from its (joined) rows.
#[derive(Debug)]
pub(super) enum Shape {
    /// One output row per row.
    Rows { output: Vec<Expr> },
    /// Groups: keys and aggregates over the rows, then HAVING and the outputs over the
    /// groups (`#gN`, `#aN`).
    Aggregate { group_by: Vec<Expr>, aggregates: Vec<(AggFn, Option<Expr>)>, having: Option<Expr>, output: Vec<Expr> },
}

/// A FROM item.
#[derive(Debug)]
pub(super) struct Source {
    pub alias: String,
    pub kind: SourceKind,
    /// Terms on this source alone (pushed to the data nodes for a table).
    pub filter: Option<Expr>,
    /// The columns the statement uses (at least one).
    pub columns: Vec<Col>,
    /// Every column the source has.
    pub all: Vec<Col>,
}

/// What a FROM item reads.
#[derive(Debug)]
pub(super) enum SourceKind {
    Table { table: Arc<Table>, access: Access },
    Cte { index: usize, name: String },
}

/// How a table driving a SELECT is read.
#[derive(Debug)]
pub(super) enum Access {
    /// Key reads (the WHERE fixes the whole primary key), values in key order.
    Keys(Vec<Vec<Value>>),
    /// A scan: the whole table, or ranges of an ordered index.
    Scan { index: Option<String>, ranges: Vec<Range> },
}

/// A joined source.
#[derive(Debug)]
pub(super) struct Join {
    pub left: bool,
    pub source: Source,
    pub method: Method,
    /// (outer column, this source's column) pairs that must be equal.
    pub pairs: Vec<(String, String)>,
    /// For key and index lookups: the outer column that gives each key column (or each of the
    /// index's first `prefix` columns), in order.
    pub keys: Vec<String>,
}

/// How a join reaches its rows.
#[derive(Debug)]
pub(super) enum Method {
    /// Key reads of the joined table (pairs in primary-key order).
    PrimaryKey,
    /// A scan of an ordered index with one range per distinct key of its first `prefix`
    /// columns (the first `prefix` pairs).
    Index { name: String, prefix: usize },
    /// A CTE's rows matched by hash.
    Hash,
}

impl Select {
    /// Whether the whole SELECT runs as one scan (no joins, no client-side terms).
    pub fn is_one_scan(&self) -> bool {
        self.joins.is_empty()
            && self.residual.is_none()
            && matches!(self.source.kind, SourceKind::Table { access: Access::Scan { .. }, .. })
    }
}

/// Plans `query` (its WITH clause included); `now` is the statement's time.
pub(super) fn plan(session: &mut Session<'_>, query: &ast::Query, now: i64) -> Result<Plan> {
    let mut ctes: Vec<Cte> = Vec::new();
    if let Some(with) = &query.with {
        if with.recursive {
            return Err(refused(format!("WITH RECURSIVE{}: only non-recursive CTEs run", at(&with.with_token.0))));
        }
        for cte in &with.cte_tables {
            let name = cte.alias.name.value.clone();
            if ctes.iter().any(|c| c.name == name) {
                return Err(refused(format!("the CTE name `{name}` is used twice{}", super::at_span(cte.alias.name.span))));
            }
            if cte.query.with.is_some() {
                return Err(refused(format!("a WITH inside the CTE `{name}`: put every CTE in the outer WITH")));
            }
            let mut select = select(session, &cte.query, &ctes, now)?;
            if !cte.alias.columns.is_empty() {
                if cte.alias.columns.len() != select.names.len() {
                    return Err(refused(format!(
                        "the CTE `{name}` names {} columns but its SELECT has {}{}",
                        cte.alias.columns.len(),
                        select.names.len(),
                        super::at_span(cte.alias.name.span)
                    )));
                }
                select.names = cte.alias.columns.iter().map(|c| c.name.value.clone()).collect();
            }
            check_unique(&select.names, &format!("the CTE `{name}`"))?;
            ctes.push(Cte { name, select });
        }
    }
    let main = select(session, query, &ctes, now)?;
    Ok(Plan { ctes, main })
}

fn check_unique(names: &[String], what: &str) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(refused(format!("{what} has two columns named `{n}`: give one an alias")));
        }
    }
    Ok(())
}

/// Name resolution for one clause.
struct Names<'a> {
    scope: &'a [Col],
    /// Where aggregates may appear: they are collected here.
    aggregates: Option<&'a mut Vec<(AggFn, Option<Expr>)>>,
    now: i64,
    clause: &'static str,
}

impl Context for Names<'_> {
    fn column(&mut self, parts: &[String], tree: &ast::Expr) -> Result<Expr> {
        let found: Vec<&Col> = match parts {
            // Column names are case-insensitive, as in MySQL.
            [name] => self.scope.iter().filter(|c| c.name.eq_ignore_ascii_case(name)).collect(),
            [alias, name] => self
                .scope
                .iter()
                .filter(|c| c.alias.eq_ignore_ascii_case(alias) && c.name.eq_ignore_ascii_case(name))
                .collect(),
            _ => return Err(refused(format!("the name `{}`{} has too many parts", cut(tree), at(tree)))),
        };
        match found.as_slice() {
            [col] => Ok(Expr::Column(col.key())),
            [] => Err(refused(format!("unknown column `{}`{} in {}", cut(tree), at(tree), self.clause))),
            many => Err(refused(format!(
                "the column `{}`{} is ambiguous: {}",
                cut(tree),
                at(tree),
                many.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn aggregate(&mut self, func: AggFn, arg: Option<&ast::Expr>, tree: &ast::Expr) -> Result<Expr> {
        let Some(list) = self.aggregates.as_deref_mut() else {
            return Err(refused(format!("the aggregate `{}`{} is not allowed in {}", cut(tree), at(tree), self.clause)));
        };
        let arg = match arg {
            Some(a) => {
                let mut inner = Names { scope: self.scope, aggregates: None, now: self.now, clause: "an aggregate's argument" };
                Some(from_ast_in(a, &mut inner)?)
            }
            None => None,
        };
        let entry = (func, arg);
        let index = match list.iter().position(|e| *e == entry) {
            Some(i) => i,
            None => {
                list.push(entry);
                list.len() - 1
            }
        };
        Ok(Expr::Column(format!("#a{index}")))
    }

    fn now(&mut self) -> i64 {
        self.now
    }
}

fn convert(tree: &ast::Expr, scope: &[Col], now: i64, clause: &'static str) -> Result<Expr> {
    from_ast_in(tree, &mut Names { scope, aggregates: None, now, clause })
}

/// A FROM item as written.
struct Item<'q> {
    factor: &'q TableFactor,
    alias: String,
    kind: SourceKind,
    all: Vec<Col>,
    hints: Hints,
}

/// USE / FORCE / IGNORE INDEX on a table.
#[derive(Default)]
pub(super) struct Hints {
    /// Only these indexes (USE or FORCE); `Some(empty)`: none.
    pub only: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub force: bool,
}

fn item<'q>(session: &mut Session<'_>, factor: &'q TableFactor, ctes: &[Cte]) -> Result<Item<'q>> {
    let TableFactor::Table { name, alias, args, with_hints, version, partitions, sample, index_directives, .. } = factor
    else {
        return Err(refused(format!(
            "`{}`{}: FROM takes tables and CTEs (no subqueries or table functions)",
            cut(factor),
            at(factor)
        )));
    };
    if args.is_some() || !with_hints.is_empty() || version.is_some() || !partitions.is_empty() || sample.is_some() {
        return Err(refused(format!("unsupported table form `{}`{}", cut(factor), at(factor))));
    }
    let table_name = match name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(i)] => i.value.clone(),
        _ => return Err(refused(format!("`{name}`{}: a table name has one part", at(factor)))),
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return Err(refused(format!("column aliases on `{}`{}", cut(factor), at(factor))));
    }
    let alias = alias.as_ref().map_or(table_name.clone(), |a| a.name.value.clone());
    let mut hints = Hints::default();
    for d in index_directives {
        let ast::TableIndexDirective::MySql(h) = d else {
            return Err(refused(format!("unsupported index directive `{d}`{}", at(factor))));
        };
        if h.for_clause.is_some() {
            return Err(refused(format!("`{h}`: index hints FOR JOIN / ORDER BY / GROUP BY are not supported")));
        }
        let names: Vec<String> = h.index_names.iter().map(|i| i.value.clone()).collect();
        match h.hint_type {
            ast::TableIndexHintType::Ignore => hints.ignore.extend(names),
            t => {
                hints.force |= t == ast::TableIndexHintType::Force;
                hints.only.get_or_insert_with(Vec::new).extend(names);
            }
        }
    }
    if let Some((index, cte)) = ctes.iter().enumerate().find(|(_, c)| c.name == table_name) {
        if hints.only.is_some() || !hints.ignore.is_empty() {
            return Err(refused(format!("index hints on the CTE `{table_name}`{}", at(factor))));
        }
        let all = cte
            .select
            .names
            .iter()
            .zip(&cte.select.types)
            .map(|(n, ty)| Col { alias: alias.clone(), name: n.clone(), ty: *ty })
            .collect();
        let kind = SourceKind::Cte { index, name: table_name };
        return Ok(Item { factor, alias, kind, all, hints });
    }
    let table = session.table(&table_name)?;
    for name in hints.only.iter().flatten().chain(&hints.ignore) {
        if table.index_number(name).is_none() {
            return Err(refused(format!("table `{table_name}` has no index `{name}`{}", at(factor))));
        }
    }
    let all = table.def.columns.iter().map(|c| Col { alias: alias.clone(), name: c.name.clone(), ty: c.ty }).collect();
    let kind = SourceKind::Table { table, access: Access::Scan { index: None, ranges: Vec::new() } };
    Ok(Item { factor, alias, kind, all, hints })
}

/// The aliases an expression's columns belong to.
fn aliases(e: &Expr) -> Vec<String> {
    let mut names = Vec::new();
    columns(e, &mut names);
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if let Some((alias, _)) = n.split_once('.') {
            if !out.iter().any(|a| a == alias) {
                out.push(alias.to_string());
            }
        }
    }
    out
}

/// One SELECT (CTEs already planned are `ctes`).
fn select(session: &mut Session<'_>, query: &ast::Query, ctes: &[Cte], now: i64) -> Result<Select> {
    let SetExpr::Select(s) = query.body.as_ref() else {
        return Err(refused(format!("`{}`: only a plain SELECT runs (no UNION, VALUES, ...)", cut(&query.body))));
    };
    refuse_extras(s, query)?;
    let (items, ons) = from_clause(session, s, ctes)?;
    let scope: Vec<Col> = items.iter().flat_map(|i| i.all.iter().cloned()).collect();
    let list = select_list(s, query, &scope, now)?;
    let (limit, offset) = limit_offset(query)?;
    let mut placed = place_terms(s, &items, &ons, now)?;
    let used = used_columns(&placed, &list.shape);
    let (source, joins) = sources(items, &ons, &mut placed, &used)?;
    let mut select = Select {
        source,
        joins,
        residual: and_all(std::mem::take(&mut placed.residual)),
        shape: list.shape,
        order: list.order,
        limit,
        offset,
        names: list.names,
        types: Vec::new(),
        index_ordered: false,
    };
    order_by_index(&mut select, list.visible);
    select.types = types(&select)?;
    Ok(select)
}

/// A join's kind (LEFT or not) and its ON condition.
type On<'q> = (bool, &'q ast::Expr);

/// The FROM clause: its items (the driving one first) and each join's ON.
fn from_clause<'q>(session: &mut Session<'_>, s: &'q ast::Select, ctes: &[Cte]) -> Result<(Vec<Item<'q>>, Vec<On<'q>>)> {
    let [from] = s.from.as_slice() else {
        return Err(refused(if s.from.is_empty() {
            "a SELECT needs FROM a table".to_string()
        } else {
            format!("`{}`: a comma join; write JOIN ... ON", cut(&s.from[1]))
        }));
    };
    let mut items = vec![item(session, &from.relation, ctes)?];
    let mut ons = Vec::new();
    for j in &from.joins {
        let (left, constraint) = match &j.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (false, c),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (true, c),
            other => {
                return Err(refused(format!(
                    "`{}`{}: only INNER and LEFT joins run",
                    cut(&format!("{other:?}").split('(').next().unwrap_or("join").to_uppercase()),
                    at(&j.relation)
                )))
            }
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(refused(format!("the join of `{}`{} needs ON (no USING or NATURAL)", cut(&j.relation), at(&j.relation))));
        };
        items.push(item(session, &j.relation, ctes)?);
        ons.push((left, on));
    }
    for (i, it) in items.iter().enumerate() {
        if items[..i].iter().any(|o| o.alias.eq_ignore_ascii_case(&it.alias)) {
            return Err(refused(format!("the name `{}` is used twice in FROM{}: give one an alias", it.alias, at(it.factor))));
        }
    }
    Ok((items, ons))
}

/// What the SELECT list, GROUP BY, HAVING and ORDER BY make.
struct Listed {
    shape: Shape,
    order: Vec<(usize, bool)>,
    names: Vec<String>,
    /// Outputs the SELECT list shows (ORDER BY may add hidden ones after them).
    visible: usize,
}

/// The SELECT list's outputs: expressions, their names, and the text each came from.
struct Outputs<'q> {
    exprs: Vec<Expr>,
    names: Vec<String>,
    trees: Vec<Option<&'q ast::Expr>>,
}

impl Outputs<'_> {
    fn column(&mut self, c: &Col) {
        self.exprs.push(Expr::Column(c.key()));
        self.names.push(c.name.clone());
        self.trees.push(None);
    }
}

fn select_list(s: &ast::Select, query: &ast::Query, scope: &[Col], now: i64) -> Result<Listed> {
    let mut aggregates = Vec::new();
    let mut out = projection(s, scope, now, &mut aggregates)?;
    let visible = out.exprs.len();
    let group_by = group_by_list(s, &out, scope, now)?;
    let having = match &s.having {
        Some(h) => {
            let mut cx = Names { scope, aggregates: Some(&mut aggregates), now, clause: "HAVING" };
            Some((from_ast_in(h, &mut cx)?, h))
        }
        None => None,
    };
    let order = order_by_list(query, &mut out, visible, scope, now, &mut aggregates)?;
    let aggregating = !aggregates.is_empty() || !group_by.is_empty();
    if let (Some((_, h)), false) = (&having, aggregating) {
        return Err(refused(format!("HAVING{} needs GROUP BY or an aggregate", at(*h))));
    }
    let shape = if aggregating {
        let mut output = Vec::with_capacity(out.exprs.len());
        for (e, tree) in out.exprs.iter().zip(&out.trees) {
            output.push(grouped(e, &group_by).map_err(|c| not_grouped(&c, *tree))?);
        }
        let having = match having {
            Some((h, tree)) => Some(grouped(&h, &group_by).map_err(|c| not_grouped(&c, Some(tree)))?),
            None => None,
        };
        Shape::Aggregate { group_by, aggregates, having, output }
    } else {
        Shape::Rows { output: out.exprs }
    };
    Ok(Listed { shape, order, names: out.names, visible })
}

/// The SELECT list: each item (aggregates collected into `aggregates`), `*` and `t.*` expanded.
fn projection<'q>(
    s: &'q ast::Select,
    scope: &[Col],
    now: i64,
    aggregates: &mut Vec<(AggFn, Option<Expr>)>,
) -> Result<Outputs<'q>> {
    let mut out = Outputs { exprs: Vec::new(), names: Vec::new(), trees: Vec::new() };
    for p in &s.projection {
        match p {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let mut cx = Names { scope, aggregates: Some(&mut *aggregates), now, clause: "the SELECT list" };
                out.exprs.push(from_ast_in(e, &mut cx)?);
                out.names.push(match p {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    _ => match e {
                        ast::Expr::Identifier(i) => i.value.clone(),
                        ast::Expr::CompoundIdentifier(parts) => parts.last().map_or(e.to_string(), |i| i.value.clone()),
                        e => e.to_string(),
                    },
                });
                out.trees.push(Some(e));
            }
            SelectItem::ExprWithAliases { .. } => {
                return Err(refused(format!("unsupported select item `{}`{}", cut(p), at(p))));
            }
            SelectItem::Wildcard(o) => {
                refuse_wildcard_options(o, p)?;
                scope.iter().for_each(|c| out.column(c));
            }
            SelectItem::QualifiedWildcard(kind, o) => {
                refuse_wildcard_options(o, p)?;
                let ast::SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                    return Err(refused(format!("unsupported `{p}`{}", at(p))));
                };
                let alias = name.to_string();
                let cols: Vec<&Col> = scope.iter().filter(|c| c.alias.eq_ignore_ascii_case(&alias)).collect();
                if cols.is_empty() {
                    return Err(refused(format!("`{p}`{}: no source is named `{alias}`", at(p))));
                }
                cols.into_iter().for_each(|c| out.column(c));
            }
        }
    }
    Ok(out)
}

/// GROUP BY's expressions (an item may name a SELECT item by number or alias).
fn group_by_list(s: &ast::Select, out: &Outputs<'_>, scope: &[Col], now: i64) -> Result<Vec<Expr>> {
    let mut group_by = Vec::new();
    match &s.group_by {
        GroupByExpr::Expressions(list, modifiers) => {
            if !modifiers.is_empty() {
                return Err(refused("GROUP BY modifiers (WITH ROLLUP, ...) are not supported"));
            }
            for g in list {
                let tree = select_item_ref(g, &out.names, &out.trees, scope)?.unwrap_or(g);
                group_by.push(convert(tree, scope, now, "GROUP BY")?);
            }
        }
        GroupByExpr::All(_) => return Err(refused("GROUP BY ALL is not supported: name the columns")),
    }
    Ok(group_by)
}

/// ORDER BY: (output, descending) per item; an expression not in the SELECT list becomes a
/// hidden output.
fn order_by_list<'q>(
    query: &'q ast::Query,
    out: &mut Outputs<'q>,
    visible: usize,
    scope: &[Col],
    now: i64,
    aggregates: &mut Vec<(AggFn, Option<Expr>)>,
) -> Result<Vec<(usize, bool)>> {
    let mut order = Vec::new();
    let Some(by) = &query.order_by else { return Ok(order) };
    let ast::OrderByKind::Expressions(list) = &by.kind else {
        return Err(refused("ORDER BY ALL is not supported: name the columns"));
    };
    if by.interpolate.is_some() {
        return Err(refused("ORDER BY ... INTERPOLATE is not supported"));
    }
    for o in list {
        if o.options.nulls_first.is_some() || o.with_fill.is_some() {
            return Err(refused(format!("`{o}`{}: NULLS FIRST / LAST and WITH FILL are not supported (NULLs sort first)", at(&o.expr))));
        }
        let desc = match &o.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(other) => return Err(refused(format!("unsupported sort order `{other:?}`{}", at(&o.expr)))),
        };
        let index = match ordinal_or_alias(&o.expr, &out.names, visible, &[])? {
            Some(i) => i,
            None => {
                let mut cx = Names { scope, aggregates: Some(&mut *aggregates), now, clause: "ORDER BY" };
                let e = from_ast_in(&o.expr, &mut cx)?;
                match out.exprs.iter().position(|x| *x == e) {
                    Some(i) => i,
                    None => {
                        out.exprs.push(e);
                        out.trees.push(Some(&o.expr));
                        out.exprs.len() - 1
                    }
                }
            }
        };
        order.push((index, desc));
    }
    Ok(order)
}

/// WHERE and ON terms, placed: per FROM item the terms on it alone (pushed to it), per join
/// its equalities with earlier items, and the rest (evaluated on the joined rows).
struct Placed {
    place: Vec<Vec<Expr>>,
    pairs: Vec<Vec<(String, String)>>,
    residual: Vec<Expr>,
}

fn place_terms(s: &ast::Select, items: &[Item<'_>], ons: &[On<'_>], now: i64) -> Result<Placed> {
    let mut placed = Placed { place: vec![Vec::new(); items.len()], pairs: vec![Vec::new(); items.len()], residual: Vec::new() };
    for (j, (left, on)) in ons.iter().enumerate() {
        on_terms(j + 1, *left, on, items, now, &mut placed)?;
    }
    let mut terms = Vec::new();
    if let Some(w) = &s.selection {
        let scope: Vec<Col> = items.iter().flat_map(|i| i.all.iter().cloned()).collect();
        conjuncts(convert(w, &scope, now, "WHERE")?, &mut terms);
    }
    for t in terms {
        let owners = aliases(&t);
        // A term on one table goes to it, unless that table is LEFT-joined (filtering its
        // rows before the join would turn a dropped row into a NULL-extended one).
        let target = match owners.as_slice() {
            [] => Some(0),
            [one] => items.iter().position(|i| &i.alias == one).filter(|j| *j == 0 || !ons[*j - 1].0),
            _ => None,
        };
        match target {
            Some(j) => placed.place[j].push(t),
            None => placed.residual.push(t),
        }
    }
    Ok(placed)
}

/// Join `j`'s ON terms: equalities with earlier items (its lookup keys), terms on it alone,
/// and (INNER joins only) the rest.
fn on_terms(j: usize, left: bool, on: &ast::Expr, items: &[Item<'_>], now: i64, placed: &mut Placed) -> Result<()> {
    let scope: Vec<Col> = items[..=j].iter().flat_map(|i| i.all.iter().cloned()).collect();
    let mut terms = Vec::new();
    conjuncts(convert(on, &scope, now, "ON")?, &mut terms);
    let me = items[j].alias.as_str();
    for t in terms {
        if let Expr::Compare(CmpOp::Eq, a, b) = &t {
            if let (Expr::Column(x), Expr::Column(y)) = (a.as_ref(), b.as_ref()) {
                match (alias_of(x) == me, alias_of(y) == me) {
                    (false, true) => {
                        placed.pairs[j].push((x.clone(), y.clone()));
                        continue;
                    }
                    (true, false) => {
                        placed.pairs[j].push((y.clone(), x.clone()));
                        continue;
                    }
                    _ => {}
                }
            }
        }
        if aliases(&t).iter().all(|a| a == me) {
            placed.place[j].push(t);
        } else if left {
            return Err(refused(format!(
                "the LEFT JOIN of `{me}`{}: its ON may hold equalities with earlier tables and terms on `{me}` alone, not `{t}`",
                at(items[j].factor)
            )));
        } else {
            placed.residual.push(t);
        }
    }
    if placed.pairs[j].is_empty() {
        return Err(refused(format!(
            "the join of `{me}`{} has no equality with an earlier table in its ON: it cannot run as a lookup join",
            at(items[j].factor)
        )));
    }
    for (x, y) in &placed.pairs[j] {
        let ty = |k: &String| scope.iter().find(|c| c.key() == *k).map(|c| c.ty);
        if let (Some(a), Some(b)) = (ty(x), ty(y)) {
            if kind_of(a) != kind_of(b) {
                return Err(refused(format!("the join of `{me}`{}: `{y} = {x}` compares {b} with {a}", at(items[j].factor))));
            }
        }
    }
    Ok(())
}

/// Every column the statement uses (`alias.column`).
fn used_columns(placed: &Placed, shape: &Shape) -> Vec<String> {
    let mut used = Vec::new();
    for e in placed.place.iter().flatten().chain(&placed.residual) {
        columns(e, &mut used);
    }
    for (x, y) in placed.pairs.iter().flatten() {
        used.push(x.clone());
        used.push(y.clone());
    }
    match shape {
        Shape::Rows { output } => output.iter().for_each(|e| columns(e, &mut used)),
        Shape::Aggregate { group_by, aggregates, .. } => {
            group_by.iter().for_each(|e| columns(e, &mut used));
            aggregates.iter().filter_map(|(_, a)| a.as_ref()).for_each(|e| columns(e, &mut used));
        }
    }
    used
}

/// The driving source and the joins, each with its access, filter and needed columns.
fn sources(items: Vec<Item<'_>>, ons: &[On<'_>], placed: &mut Placed, used: &[String]) -> Result<(Source, Vec<Join>)> {
    let mut driving = None;
    let mut joins = Vec::new();
    for (j, it) in items.into_iter().enumerate() {
        let mut cols: Vec<Col> = it.all.iter().filter(|c| used.contains(&c.key())).cloned().collect();
        if cols.is_empty() {
            let first = match &it.kind {
                SourceKind::Table { table, .. } => usize::from(table.key_columns[0]),
                SourceKind::Cte { .. } => 0,
            };
            cols.push(it.all[first].clone());
        }
        let filter_terms = std::mem::take(&mut placed.place[j]);
        let (kind, reach) = access(it.kind, &it.hints, &it.alias, &filter_terms, &placed.pairs[j], j > 0, it.factor)?;
        let source = Source { alias: it.alias, kind, filter: and_all(filter_terms), columns: cols, all: it.all };
        match driving {
            None => driving = Some(source),
            Some(_) => {
                let (method, keys) = reach.unwrap_or((Method::Hash, Vec::new()));
                let pairs = std::mem::take(&mut placed.pairs[j]);
                joins.push(Join { left: ons[j - 1].0, source, method, pairs, keys });
            }
        }
    }
    let source = driving.ok_or_else(|| refused("a SELECT needs FROM a table"))?;
    Ok((source, joins))
}

/// What kind of value a column holds, for comparing join columns: numbers of any type
/// compare with each other, text with text, bytes with bytes, bools with bools.
fn kind_of(ty: ColumnType) -> u8 {
    match ty {
        ColumnType::Bool => 1,
        ColumnType::Varchar { .. } => 2,
        ColumnType::Bytes { .. } => 3,
        _ => 0,
    }
}

fn alias_of(key: &str) -> &str {
    key.split_once('.').map_or("", |(a, _)| a)
}

fn refuse_wildcard_options(o: &ast::WildcardAdditionalOptions, p: &SelectItem) -> Result<()> {
    let plain = o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none();
    if plain {
        Ok(())
    } else {
        Err(refused(format!("unsupported wildcard form `{p}`{}", at(p))))
    }
}

/// Refuses the parts of a SELECT the front end does not run.
fn refuse_extras(s: &ast::Select, q: &ast::Query) -> Result<()> {
    let named = |what: &str| Err(refused(format!("{what} is not supported")));
    if let Some(d) = &s.distinct {
        return Err(refused(format!("`{d}`{}: write GROUP BY instead of DISTINCT", at(&s.select_token.0))));
    }
    if s.top.is_some() {
        return named("TOP");
    }
    if s.into.is_some() {
        return named("SELECT ... INTO");
    }
    if !s.lateral_views.is_empty() || s.prewhere.is_some() || !s.connect_by.is_empty() {
        return named("LATERAL VIEW, PREWHERE or CONNECT BY");
    }
    if !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty() {
        return named("CLUSTER / DISTRIBUTE / SORT BY");
    }
    if !s.named_window.is_empty() || s.qualify.is_some() {
        return named("WINDOW or QUALIFY");
    }
    if s.exclude.is_some() || s.value_table_mode.is_some() || !s.optimizer_hints.is_empty() {
        return named("this SELECT form");
    }
    if q.fetch.is_some() || !q.locks.is_empty() || q.for_clause.is_some() || q.settings.is_some() {
        return named("FETCH, FOR UPDATE / SHARE, FOR XML / JSON or SETTINGS");
    }
    if q.format_clause.is_some() || !q.pipe_operators.is_empty() {
        return named("FORMAT or pipe operators");
    }
    Ok(())
}

/// A GROUP BY or ORDER BY item that names a SELECT item: by number, or by an alias that is
/// not also a column name. Returns the item's expression as written.
fn select_item_ref<'q>(
    e: &ast::Expr,
    names: &[String],
    trees: &[Option<&'q ast::Expr>],
    scope: &[Col],
) -> Result<Option<&'q ast::Expr>> {
    match ordinal_or_alias(e, names, names.len(), scope)? {
        Some(i) => match trees.get(i).copied().flatten() {
            Some(tree) => Ok(Some(tree)),
            None => Err(refused(format!("`{e}`{}: GROUP BY of a `*` column: name the column", at(e)))),
        },
        None => Ok(None),
    }
}

/// The SELECT item `e` names by number (1-based) or alias, if it does; an alias that is
/// also a column of `scope` names the column instead (GROUP BY passes the sources' columns,
/// ORDER BY none: there an alias comes first, as in MySQL).
fn ordinal_or_alias(e: &ast::Expr, names: &[String], visible: usize, scope: &[Col]) -> Result<Option<usize>> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => {
                let i: usize = n.parse().map_err(|_| refused(format!("`{e}`{}: not a column number", at(e))))?;
                if i == 0 || i > visible {
                    return Err(refused(format!("column number {i}{} is not in the SELECT list (1 to {visible})", at(e))));
                }
                Ok(Some(i - 1))
            }
            _ => Ok(None),
        },
        ast::Expr::Identifier(id) => {
            let is_column = scope.iter().any(|c| c.name.eq_ignore_ascii_case(&id.value));
            Ok(names[..visible].iter().position(|n| n.eq_ignore_ascii_case(&id.value)).filter(|_| !is_column))
        }
        _ => Ok(None),
    }
}

/// `e` over the groups: GROUP BY expressions become `#gN`; a column left outside an
/// aggregate is the error (its name).
fn grouped(e: &Expr, group_by: &[Expr]) -> std::result::Result<Expr, String> {
    if let Some(i) = group_by.iter().position(|g| g == e) {
        return Ok(Expr::Column(format!("#g{i}")));
    }
    match e {
        Expr::Column(name) if name.starts_with('#') => Ok(e.clone()),
        Expr::Column(name) => Err(name.clone()),
        e => {
            let mut failed = None;
            let out = map_children(e, &mut |c| {
                grouped(c, group_by).map_err(|n| {
                    failed.get_or_insert(n);
                    crate::error::Error::invalid("")
                })
            });
            match (out, failed) {
                (Ok(e), None) => Ok(e),
                (_, Some(n)) => Err(n),
                (Err(_), None) => Err(String::new()),
            }
        }
    }
}

fn not_grouped(column: &str, tree: Option<&ast::Expr>) -> crate::error::Error {
    let (what, place) = match tree {
        Some(t) => (format!("`{}`", cut(t)), at(t)),
        None => ("the `*`".to_string(), String::new()),
    };
    refused(format!("{what}{place} uses `{column}`, which is neither in GROUP BY nor inside an aggregate"))
}

fn limit_offset(query: &ast::Query) -> Result<(Option<u64>, u64)> {
    let number = |e: &ast::Expr, what: &str| -> Result<u64> {
        match e {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => n.parse().map_err(|_| refused(format!("{what} `{n}`{}: not a count", at(e)))),
                _ => Err(refused(format!("{what} `{e}`{}: not a count", at(e)))),
            },
            _ => Err(refused(format!("{what} `{e}`{} must be a number", at(e)))),
        }
    };
    match &query.limit_clause {
        None => Ok((None, 0)),
        Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) => {
            if !limit_by.is_empty() {
                return Err(refused("LIMIT BY is not supported"));
            }
            let limit = limit.as_ref().map(|l| number(l, "LIMIT")).transpose()?;
            let offset = offset.as_ref().map(|o| number(&o.value, "OFFSET")).transpose()?.unwrap_or(0);
            Ok((limit, offset))
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((Some(number(limit, "LIMIT")?), number(offset, "OFFSET")?))
        }
    }
}

/// The stages' queries: over the joined rows, then (aggregating) over the groups.
pub(super) fn stage_queries(select: &Select) -> (Query, Option<Query>) {
    match &select.shape {
        Shape::Rows { output } => (Query { filter: select.residual.clone(), output: output.clone(), ..Query::default() }, None),
        Shape::Aggregate { group_by, aggregates, having, output } => (
            Query { filter: select.residual.clone(), group_by: group_by.clone(), aggregates: aggregates.clone(), output: Vec::new() },
            Some(Query { filter: having.clone(), output: output.clone(), ..Query::default() }),
        ),
    }
}

/// The group relation's column names: `#g0..`, then `#a0..`.
pub(super) fn group_names(select: &Select) -> Vec<String> {
    match &select.shape {
        Shape::Aggregate { group_by, aggregates, .. } => (0..group_by.len())
            .map(|i| format!("#g{i}"))
            .chain((0..aggregates.len()).map(|i| format!("#a{i}")))
            .collect(),
        Shape::Rows { .. } => Vec::new(),
    }
}

/// The output types, found by compiling the stages (which also checks every expression's
/// types before anything runs).
fn types(select: &Select) -> Result<Vec<ColumnType>> {
    // Every column of every source: the stages see a subset, with the same types.
    let sources = std::iter::once(&select.source).chain(select.joins.iter().map(|j| &j.source));
    let cols: Vec<(String, ColumnType)> = sources.flat_map(|s| s.all.iter().map(|c| (c.key(), c.ty))).collect();
    let (first, second) = stage_queries(select);
    let (_, _, types) = local::compile_over(&cols, &first)?;
    let Some(second) = second else { return Ok(types) };
    let groups: Vec<(String, ColumnType)> = group_names(select).into_iter().zip(types).collect();
    let (_, _, types) = local::compile_over(&groups, &second)?;
    Ok(types)
}
