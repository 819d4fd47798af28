//! The bank-transfer workload the durability and failover tests share: accounts whose total
//! never changes, a transfer record per transfer, and the check that balances agree with the
//! records (every transaction whole) and the total holds.

use std::collections::HashSet;

use client::{
    Column, ColumnType, Durability, Exec, LockMode, Outcome, ScanRequest, Session, TableDef, Value,
};

pub const ACCOUNTS: i64 = 16;
pub const START_BALANCE: i64 = 1000;

/// A small deterministic generator (xorshift): the seed is printed so a failure can be
/// replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }
}

/// `BLOCKWIRE_SEED`, or one from the clock; printed either way.
pub fn seed() -> u64 {
    let s =
        std::env::var("BLOCKWIRE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("seed {s} (BLOCKWIRE_SEED={s} replays the choices)");
    s
}

pub fn transfers_def() -> TableDef {
    let col = |name: &str| Column { name: name.into(), ty: ColumnType::I64, nullable: false };
    TableDef {
        name: "transfers".into(),
        columns: vec![col("id"), col("src"), col("dst"), col("amount")],
        primary_key: vec!["id".into()],
        partition_key: None,
        partitions: Some(8),
        read_backup: false,
        indexes: Vec::new(),
    }
}

/// Creates `accounts` and `transfers` and fills the accounts (committed with `durability`).
pub fn setup_bank(s: &mut Session<'_>, durability: Durability) {
    let accounts = s.create_table(&super::accounts_def(8)).unwrap();
    s.create_table(&transfers_def()).unwrap();
    let mut tx = s.begin();
    for id in 0..ACCOUNTS {
        tx.insert(&accounts, &[("id", Value::I64(id)), ("balance", Value::I64(START_BALANCE))])
            .unwrap();
    }
    tx.set_durability(durability);
    assert_eq!(s.execute(&mut tx, Exec::Commit).unwrap(), Outcome::Committed);
}

/// One transfer with its record, committed with `durability`; `Ok(gci)` when acknowledged.
pub fn transfer(
    s: &mut Session<'_>,
    id: i64,
    a: i64,
    b: i64,
    durability: Durability,
) -> client::Result<u64> {
    let accounts = s.table("accounts")?;
    let transfers = s.table("transfers")?;
    let mut tx = s.begin_hinted(&accounts, &[Value::I64(a)])?;
    let ra = tx.read(&accounts, &[Value::I64(a)], LockMode::Exclusive)?;
    let rb = tx.read(&accounts, &[Value::I64(b)], LockMode::Exclusive)?;
    s.execute(&mut tx, Exec::NoCommit)?;
    let balance =
        |op| tx.row(op).and_then(|r| r.get("balance")).and_then(Value::as_i64).unwrap_or(0);
    let (ba, bb) = (balance(ra), balance(rb));
    tx.update(&accounts, &[Value::I64(a)], &[("balance", Value::I64(ba - 1))])?;
    tx.update(&accounts, &[Value::I64(b)], &[("balance", Value::I64(bb + 1))])?;
    let values = [
        ("id", Value::I64(id)),
        ("src", Value::I64(a)),
        ("dst", Value::I64(b)),
        ("amount", Value::I64(1)),
    ];
    tx.insert(&transfers, &values)?;
    tx.set_durability(durability);
    s.execute(&mut tx, Exec::Commit)?;
    Ok(tx.gci())
}

/// A random pair of different accounts.
pub fn pair(rng: &mut Rng) -> (i64, i64) {
    let a = (rng.next() % ACCOUNTS as u64) as i64;
    let b = (a + 1 + (rng.next() % (ACCOUNTS as u64 - 1)) as i64) % ACCOUNTS;
    (a, b)
}

/// Every row of `table` (committed reads).
pub fn rows_of(s: &mut Session<'_>, table: &str) -> Vec<Vec<Value>> {
    let t = s.table(table).unwrap();
    s.scan(&ScanRequest::new(&t)).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Balances agree with the transfer records (whole transactions) and the total is intact;
/// returns the transfer ids present.
pub fn check_bank(s: &mut Session<'_>) -> HashSet<i64> {
    let mut expected = vec![START_BALANCE; ACCOUNTS as usize];
    let mut present = HashSet::new();
    for row in rows_of(s, "transfers") {
        let (Value::I64(id), Value::I64(a), Value::I64(b)) = (&row[0], &row[1], &row[2]) else {
            panic!("transfer row {row:?}")
        };
        expected[*a as usize] -= 1;
        expected[*b as usize] += 1;
        present.insert(*id);
    }
    let mut found = vec![i64::MIN; ACCOUNTS as usize];
    for row in rows_of(s, "accounts") {
        let (Value::I64(id), Value::I64(balance)) = (&row[0], &row[1]) else {
            panic!("account row {row:?}")
        };
        found[*id as usize] = *balance;
    }
    assert_eq!(
        found, expected,
        "balances disagree with the transfer records: a transaction is partly there"
    );
    assert_eq!(found.iter().sum::<i64>(), START_BALANCE * ACCOUNTS, "the bank's total changed");
    present
}
