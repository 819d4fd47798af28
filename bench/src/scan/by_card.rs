//! `txn_by_card`: the table of the pruned range scans. It is partitioned by `card` (its primary
//! key is `(card, seq)`, its partition key `card`) and has the ordered index [`INDEX`] on
//! `(card, ts)`, which leads with the partition key: a range on it whose two ends fix one card
//! runs on that card's partition alone (the engine's `ScanSpec::partitions`), the way the
//! metadata server lists one directory.
//!
//! Its size is fixed ([`ROWS`], whatever `--rows` is: it only serves the latency cases) and
//! every column is a function of the row's number `n` ([`values`]):
//! - cards `0..BULK_CARDS` hold [`BULK_CARD_ROWS`] rows each (rows `0..BULK_ROWS`);
//! - the next [`LARGE_CARDS`] cards hold [`LARGE_CARD_ROWS`] rows each;
//! - the last [`SINGLE_CARDS`] cards hold one row each.
//!
//! The 10,000-row case reads one card of 10,000 rows rather than 100 consecutive cards: the
//! engine prunes a range only when its two ends agree on the partition key, so a range over
//! 100 cards would run on every partition, whichever partitions its cards hash to.

use client::{Column, ColumnType, TableDef, Value};
use engine::schema::IndexDef;

use super::{Data, INDEX, PARTITIONS, STRIDE, TS_BASE_US};

/// The table's name.
pub(super) const TABLE: &str = "txn_by_card";
/// Where a row holds `card` and `ts`, in the table's column order.
pub(super) const CARD_TS_COLUMNS: (usize, usize) = (0, 3);
/// Cards of [`BULK_CARD_ROWS`] rows.
pub(super) const BULK_CARDS: i64 = 490;
pub(super) const BULK_CARD_ROWS: i64 = 100;
/// Cards of [`LARGE_CARD_ROWS`] rows, after the bulk cards.
pub(super) const LARGE_CARDS: i64 = 5;
pub(super) const LARGE_CARD_ROWS: i64 = 10_000;
/// Cards of one row, after the large cards.
pub(super) const SINGLE_CARDS: i64 = 1_000;
const BULK_ROWS: i64 = BULK_CARDS * BULK_CARD_ROWS;
const LARGE_ROWS: i64 = LARGE_CARDS * LARGE_CARD_ROWS;
/// Rows of the table: 100,000.
pub(super) const ROWS: i64 = BULK_ROWS + LARGE_ROWS + SINGLE_CARDS;

/// `txn_by_card(card i64, seq i64, amount i64, ts timestamp)`, primary key `(card, seq)`,
/// partition key `card`, [`PARTITIONS`] partitions, the ordered index [`INDEX`] on
/// `(card, ts)`.
pub(super) fn def() -> TableDef {
    let column = |name: &str, ty| Column { name: name.into(), ty, nullable: false };
    TableDef {
        name: TABLE.into(),
        columns: vec![
            column("card", ColumnType::I64),
            column("seq", ColumnType::I64),
            column("amount", ColumnType::I64),
            column("ts", ColumnType::Timestamp),
        ],
        primary_key: vec!["card".into(), "seq".into()],
        partition_key: Some(vec!["card".into()]),
        partitions: Some(PARTITIONS),
        read_backup: false,
        indexes: vec![IndexDef { name: INDEX.into(), columns: vec!["card".into(), "ts".into()] }],
    }
}

/// `(card, seq)` of row `n`: its card and its place in the card.
pub(super) fn card_and_seq(n: i64) -> (i64, i64) {
    debug_assert!((0..ROWS).contains(&n), "row {n} of {ROWS}");
    if n < BULK_ROWS {
        (n / BULK_CARD_ROWS, n % BULK_CARD_ROWS)
    } else if n < BULK_ROWS + LARGE_ROWS {
        let m = n - BULK_ROWS;
        (BULK_CARDS + m / LARGE_CARD_ROWS, m % LARGE_CARD_ROWS)
    } else {
        (BULK_CARDS + LARGE_CARDS + (n - BULK_ROWS - LARGE_ROWS), 0)
    }
}

/// The columns of row `n`: `ts` grows with `n`, so a card's rows are in `seq` order by
/// `(card, ts)` too.
pub(super) fn values(n: i64) -> [(&'static str, Value); 4] {
    let (card, seq) = card_and_seq(n);
    let (_, amount, _) = Data::facts(n);
    [
        ("card", Value::I64(card)),
        ("seq", Value::I64(seq)),
        ("amount", Value::I64(amount)),
        ("ts", Value::Timestamp(TS_BASE_US + n * 1_000_000)),
    ]
}

/// The card the `i`th scan of the case returning `rows` rows reads (cards of that many rows,
/// walked every [`STRIDE`]th).
pub(super) fn card_of(rows: u64, i: u64) -> i64 {
    let walk = |n: i64| (i.wrapping_mul(STRIDE) % n as u64) as i64;
    match rows {
        1 => BULK_CARDS + LARGE_CARDS + walk(SINGLE_CARDS),
        100 => walk(BULK_CARDS),
        10_000 => BULK_CARDS + walk(LARGE_CARDS),
        _ => unreachable!("the range cases return 1, 100 or 10,000 rows, not {rows}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_card_holds_exactly_its_rows() {
        let mut rows_of = std::collections::HashMap::<i64, (u64, i64)>::new();
        let mut keys = std::collections::HashSet::new();
        for n in 0..ROWS {
            let (card, seq) = card_and_seq(n);
            assert!(keys.insert((card, seq)), "key ({card}, {seq}) twice");
            let (count, next_seq) = rows_of.entry(card).or_default();
            assert_eq!(seq, *next_seq, "card {card}: seq in row order");
            *count += 1;
            *next_seq += 1;
        }
        assert_eq!(ROWS, 100_000);
        assert_eq!(rows_of.len() as i64, BULK_CARDS + LARGE_CARDS + SINGLE_CARDS);
        for expect in [1, 100, 10_000] {
            let mut cards = std::collections::HashSet::new();
            for i in 0..20_000 {
                let card = card_of(expect, i);
                assert_eq!(rows_of[&card].0, expect, "card {card} of the {expect}-row case");
                cards.insert(card);
            }
            // The walk visits every card of its size.
            let of_size = rows_of.values().filter(|(n, _)| *n == expect).count();
            assert_eq!(cards.len(), of_size, "{expect}-row cards visited");
        }
    }

    #[test]
    fn the_index_leads_with_the_partition_key() {
        let def = def();
        let key = def.partition_key.clone().unwrap();
        assert_eq!(def.primary_key[..key.len()], key[..]);
        assert_eq!(def.indexes[0].columns[..key.len()], key[..]);
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names[CARD_TS_COLUMNS.0], names[CARD_TS_COLUMNS.1]), ("card", "ts"));
        let row = values(BULK_ROWS + 3);
        assert_eq!(row.each_ref().map(|(name, _)| *name), ["card", "seq", "amount", "ts"]);
        assert_eq!(row[0].1, Value::I64(BULK_CARDS));
        assert_eq!(row[1].1, Value::I64(3));
    }

    /// What the header says of the cases, by the engine's own pruning: a range fixing one card
    /// runs on one partition, a range over 100 cards on all of them.
    #[test]
    fn one_card_prunes_and_a_hundred_cards_do_not() {
        use client::{Range, RangeEnd};
        use engine::scan::ScanSpec;
        let table = client::Table::new(1, 1, def(), PARTITIONS);
        let spec = |low: i64, high: i64| ScanSpec {
            index: Some(0),
            ranges: vec![Range {
                low: RangeEnd { values: vec![Value::I64(low)], inclusive: true },
                high: RangeEnd { values: vec![Value::I64(high)], inclusive: true },
            }],
            program: vec![],
        };
        let mut partitions = std::collections::HashSet::new();
        for rows in [1, 100, 10_000] {
            for i in 0..50 {
                let card = card_of(rows, i);
                let p = spec(card, card).partitions(&table);
                assert_eq!(p.len(), 1, "card {card}: {p:?}");
                partitions.insert(p[0]);
            }
        }
        assert!(partitions.len() > 1, "the cards spread over partitions: {partitions:?}");
        assert_eq!(spec(0, 99).partitions(&table).len(), PARTITIONS as usize);
    }
}
