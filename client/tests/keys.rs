//! Key operations and schema changes on a two-data-node cluster (one node group, two replicas)
//! of `blockwire-datanode` processes, through the client library: each rule's error names what
//! was wrong.

mod common;

use client::{Error, Exec, LockMode, Outcome, Value};
use common::{accounts_def, Shape, TestCluster};

#[test]
fn create_insert_read_update_delete_and_drop() {
    let cluster = TestCluster::start("crud", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(4)).unwrap();
    assert_eq!(t.partitions, 4);

    let mut tx = s.begin();
    for id in 0..20i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(100 + id))]).unwrap();
    }
    assert_eq!(s.execute(&mut tx, Exec::Commit).unwrap(), Outcome::Committed);

    let mut tx = s.begin();
    let reads: Vec<_> =
        (0..21i64).map(|id| tx.read(&t, &[Value::I64(id)], LockMode::CommittedRead).unwrap()).collect();
    s.execute(&mut tx, Exec::Commit).unwrap();
    for (id, op) in reads.iter().enumerate().take(20) {
        let row = tx.row(*op).expect("row");
        assert_eq!(row.get("balance"), Some(&Value::I64(100 + id as i64)));
        assert_eq!(row.get("note"), Some(&Value::Null));
    }
    assert!(tx.row(reads[20]).is_none() && tx.answered(reads[20]), "a missing key reads as no row");

    let mut tx = s.begin();
    tx.update(&t, &[Value::I64(3)], &[("note", Value::Text("hello".into()))]).unwrap();
    tx.delete(&t, &[Value::I64(4)]).unwrap();
    tx.write(&t, &[("id", Value::I64(5)), ("balance", Value::I64(-5))]).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    let mut tx = s.begin();
    let r3 = tx.read(&t, &[Value::I64(3)], LockMode::Shared).unwrap();
    let r4 = tx.read(&t, &[Value::I64(4)], LockMode::Shared).unwrap();
    let r5 = tx.read(&t, &[Value::I64(5)], LockMode::Exclusive).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert_eq!(tx.row(r3).unwrap().get("note"), Some(&Value::Text("hello".into())));
    assert_eq!(tx.row(r3).unwrap().get("balance"), Some(&Value::I64(103)));
    assert!(tx.row(r4).is_none());
    assert_eq!(tx.row(r5).unwrap().get("balance"), Some(&Value::I64(-5)));

    // Both replicas of every partition hold the same rows.
    for p in 0..t.partitions {
        let sums = s.partition_checksums(&t, p).unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(sums[0].1, sums[1].1, "partition {p}: {sums:?}");
        assert_eq!(sums[0].2, sums[1].2, "partition {p}: {sums:?}");
    }

    s.drop_table("accounts").unwrap();
    let mut tx = s.begin();
    tx.read(&t, &[Value::I64(1)], LockMode::CommittedRead).unwrap();
    let e = s.execute(&mut tx, Exec::Commit).unwrap_err();
    assert!(matches!(e, Error::Schema { .. }), "{e}");
    assert!(s.tables().unwrap().is_empty());
    // A table of the same name is a new table: a new version.
    let again = s.create_table(&accounts_def(2)).unwrap();
    assert!(again.version > t.version);
}

#[test]
fn each_refusal_is_typed_and_names_what_was_wrong() {
    let cluster = TestCluster::start("refusals", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(4)).unwrap();

    let e = s.create_table(&accounts_def(4)).unwrap_err();
    assert!(matches!(e, Error::Schema { .. }) && e.to_string().contains("\"accounts\" exists"), "{e}");
    let mut bad = accounts_def(4);
    bad.primary_key = vec!["note".into()];
    let e = s.create_table(&bad).unwrap_err();
    assert!(e.to_string().contains("\"note\"") && e.to_string().contains("nullable"), "{e}");

    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(1)), ("balance", Value::I64(1))]).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();

    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(1)), ("balance", Value::I64(2))]).unwrap();
    let e = s.execute(&mut tx, Exec::Commit).unwrap_err();
    assert!(matches!(e, Error::DuplicateKey(_)) && e.to_string().contains("(1)"), "{e}");

    let mut tx = s.begin();
    tx.update(&t, &[Value::I64(99)], &[("balance", Value::I64(2))]).unwrap();
    let e = s.execute(&mut tx, Exec::Commit).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)) && e.to_string().contains("accounts"), "{e}");

    // Missing NOT NULL column: refused by the data node, naming it.
    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(2))]).unwrap();
    let e = s.execute(&mut tx, Exec::Commit).unwrap_err();
    assert!(e.to_string().contains("column \"balance\" needs a value"), "{e}");

    // Values the client refuses before sending.
    let mut tx = s.begin();
    let e = tx.insert(&t, &[("id", Value::I64(3)), ("balance", Value::Text("x".into()))]).unwrap_err();
    assert!(e.to_string().contains("column \"balance\" is i64, not text"), "{e}");
    let e = tx.insert(&t, &[("id", Value::I64(3)), ("balance", Value::I64(1)), ("note", Value::Text("x".repeat(33)))]).unwrap_err();
    assert!(e.to_string().contains("at most 32 bytes"), "{e}");
    let e = tx.update(&t, &[Value::I64(1)], &[("nope", Value::I64(1))]).unwrap_err();
    assert!(e.to_string().contains("no column \"nope\""), "{e}");

    // A failed transaction leaves nothing behind: the first insert of the batch is undone.
    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(10)), ("balance", Value::I64(1))]).unwrap();
    tx.insert(&t, &[("id", Value::I64(1)), ("balance", Value::I64(1))]).unwrap();
    assert!(s.execute(&mut tx, Exec::Commit).is_err());
    let mut tx = s.begin();
    let r = tx.read(&t, &[Value::I64(10)], LockMode::CommittedRead).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert!(tx.row(r).is_none(), "the aborted insert is not visible");

    // Rollback undoes the open transaction's writes.
    let mut tx = s.begin();
    tx.update(&t, &[Value::I64(1)], &[("balance", Value::I64(555))]).unwrap();
    s.execute(&mut tx, Exec::NoCommit).unwrap();
    assert_eq!(s.execute(&mut tx, Exec::Rollback).unwrap(), Outcome::RolledBack);
    let mut tx = s.begin();
    let r = tx.read(&t, &[Value::I64(1)], LockMode::CommittedRead).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert_eq!(tx.row(r).unwrap().get("balance"), Some(&Value::I64(1)));
}

#[test]
fn read_backup_tables_read_your_writes_from_either_replica() {
    let cluster = TestCluster::start("read-backup", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let mut def = accounts_def(4);
    def.read_backup = true;
    let t = s.create_table(&def).unwrap();
    // Round-robin transactions alternate coordinators on both data nodes; a committed read on
    // the backup's node is served by the backup replica, and must see the commit just made.
    for i in 0..200i64 {
        let key = [Value::I64(i % 7)];
        let mut tx = s.begin();
        tx.write(&t, &[("id", Value::I64(i % 7)), ("balance", Value::I64(i))]).unwrap();
        s.execute(&mut tx, Exec::Commit).unwrap();
        let mut tx = s.begin();
        let r = tx.read(&t, &key, LockMode::CommittedRead).unwrap();
        s.execute(&mut tx, Exec::Commit).unwrap();
        assert_eq!(tx.row(r).and_then(|r| r.get("balance")).cloned(), Some(Value::I64(i)), "write {i}");
    }
    for p in 0..t.partitions {
        let sums = s.partition_checksums(&t, p).unwrap();
        assert_eq!((sums[0].1, sums[0].2), (sums[1].1, sums[1].2), "partition {p}");
    }
}
