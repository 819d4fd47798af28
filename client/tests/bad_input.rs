//! Untrusted input from an API node: raw signals (forged transaction ids, unknown tables,
//! malformed keys and values, wrong batch counts, engine-internal signals, short payloads)
//! sent straight to a data node's blocks. Each gets a typed refusal or a counted, logged
//! drop; the data node keeps running and serving a well-behaved client.

mod common;

use std::time::{Duration, Instant};

use client::{Exec, LockMode, Value};
use common::{accounts_def, Shape, TestCluster};
use engine::protocol::*;
use engine::{ErrorCode, API_SESSION, COORDINATOR, DICTIONARY, STORAGE};
use node::config::Config;
use node::links::registry_config;
use signals::{BlockInstance, BlockRef, NodeId, Signal, SignalData};
use transporter::{LinkEvent, ReceiveSide, Registry, SendBuffers};

/// A raw API node: its own signals, no client library.
struct Raw {
    _registry: Registry,
    receive: ReceiveSide,
    send: SendBuffers,
    me: BlockRef,
}

impl Raw {
    fn connect(cluster: &TestCluster, api: u32) -> Raw {
        let engine = engine::Engine::new();
        let config = Config::load_with(&cluster.path, &engine.kinds()).unwrap();
        let me = NodeId::new(api).unwrap();
        let mut links = registry_config(&config, me).unwrap();
        links.send_thread = false;
        let mut registry = Registry::start(links).unwrap();
        let mut up = 0;
        while up < cluster.shape.data_nodes {
            if let LinkEvent::Connected { .. } = registry.events().recv_timeout(Duration::from_secs(20)).unwrap() {
                up += 1;
            }
        }
        let receive = registry.take_receive_side().unwrap();
        let send = registry.send_buffers();
        Raw { _registry: registry, receive, send, me: BlockRef::new(me, API_SESSION, BlockInstance(0)) }
    }

    fn send(&mut self, to: BlockRef, gsn: signals::Gsn, data: &[u32], sections: &[&[u32]]) {
        let signal = Signal::new(gsn, self.me, to).data(data).sections(sections);
        self.send.pack(to.node, &signal).unwrap();
        self.send.flush();
    }

    /// Signals that arrive within `wait`: (gsn, data words, section 0 as text).
    fn collect(&mut self, wait: Duration) -> Vec<(signals::Gsn, Vec<u32>, String)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.receive.poll(Some(Duration::from_millis(10)), &mut |_, v| {
                let text = v
                    .section(0)
                    .and_then(engine::row::words_to_bytes)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                out.push((v.gsn(), v.data().to_vec(), text));
            });
        }
        out
    }
}

fn refusal_of(answers: &[(signals::Gsn, Vec<u32>, String)], tx: u64) -> Option<(ErrorCode, String)> {
    let (low, high) = split(tx);
    answers.iter().find(|(g, d, _)| *g == TC_EXECREF && d[0] == low && d[1] == high).map(|(_, d, text)| {
        (ErrorCode::from_u32(d[2]).unwrap(), text.clone())
    })
}

#[test]
fn hostile_signals_get_typed_refusals_or_counted_drops_and_the_node_keeps_serving() {
    let mut cluster = TestCluster::start("bad-input", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(4)).unwrap();
    let mut tx = s.begin();
    tx.insert(&t, &[("id", Value::I64(1)), ("balance", Value::I64(10))]).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();

    let mut raw = Raw::connect(&cluster, 105);
    let node1 = NodeId::new(1).unwrap();
    let tc = BlockRef::new(node1, COORDINATOR, BlockInstance(0));
    let key = engine::row::bytes_to_words(&engine::row::encode_key(&t, &[Value::I64(1)]).unwrap());
    let keyreq = |tx: u64, table: u32, version: u32, operation: u32| {
        let (tx_low, tx_high) = split(tx);
        TcKeyReq { tx_low, tx_high, op_no: 0, table, table_version: version, operation, lock: 0, map_version: 1 }
    };
    let exec = |tx: u64, operations: u32| {
        let (tx_low, tx_high) = split(tx);
        TcExecReq { tx_low, tx_high, exec: Exec::Commit as u32, operations, durability: 0 }
    };

    // 1. An unknown table id.
    raw.send(tc, TC_KEYREQ, keyreq(1, 999, 1, OpKind::Read as u32).as_words(), &[&key]);
    raw.send(tc, TC_EXECREQ, exec(1, 1).as_words(), &[]);
    // 2. An old table version.
    raw.send(tc, TC_KEYREQ, keyreq(2, t.id, t.version + 7, OpKind::Read as u32).as_words(), &[&key]);
    raw.send(tc, TC_EXECREQ, exec(2, 1).as_words(), &[]);
    // 3. A key of the wrong shape (4 bytes for an i64 key) and a malformed section.
    raw.send(tc, TC_KEYREQ, keyreq(3, t.id, t.version, OpKind::Read as u32).as_words(), &[&[4, 7]]);
    raw.send(tc, TC_EXECREQ, exec(3, 1).as_words(), &[]);
    raw.send(tc, TC_KEYREQ, keyreq(4, t.id, t.version, OpKind::Read as u32).as_words(), &[&[999, 1]]);
    raw.send(tc, TC_EXECREQ, exec(4, 1).as_words(), &[]);
    // 4. An update whose value has the wrong type (an i64 column given 3 bytes of text).
    let attrs = engine::row::bytes_to_words(&[1, 0, 1, 0, 0, 3, 0, 0, 0, b'a', b'b', b'c']);
    raw.send(tc, TC_KEYREQ, keyreq(5, t.id, t.version, OpKind::Update as u32).as_words(), &[&key, &attrs]);
    raw.send(tc, TC_EXECREQ, exec(5, 1).as_words(), &[]);
    // 5. An unknown operation, and a batch count that does not match.
    raw.send(tc, TC_KEYREQ, keyreq(6, t.id, t.version, 77).as_words(), &[&key]);
    raw.send(tc, TC_EXECREQ, exec(6, 1).as_words(), &[]);
    raw.send(tc, TC_EXECREQ, exec(7, 5).as_words(), &[]);
    // 6. Engine-internal signals from an API node, short payloads, a forged commit.
    let storage = BlockRef::new(node1, STORAGE, BlockInstance(0));
    raw.send(storage, LQH_KEYREQ, LqhKeyReq::default().as_words(), &[&key]);
    raw.send(storage, COMMIT_REQ, CommitReq { op: 5, ..CommitReq::default() }.as_words(), &[]);
    raw.send(tc, LQH_KEYCONF, LqhKeyConf::default().as_words(), &[]);
    raw.send(tc, TC_KEYREQ, &[1, 2, 3], &[]);
    raw.send(BlockRef::new(node1, DICTIONARY, BlockInstance(0)), DICT_COMMIT_REQ, &[1, 1], &[]);
    raw.send(BlockRef::new(node1, DICTIONARY, BlockInstance(0)), DICT_CREATE_REQ, &[9, 0], &[&[3, 0x7b7b7b]]);

    let answers = raw.collect(Duration::from_millis(1500));
    let expect = |tx: u64, code: ErrorCode, needle: &str| {
        let (c, text) = refusal_of(&answers, tx).unwrap_or_else(|| panic!("no refusal for tx {tx}: {answers:?}"));
        assert_eq!(c, code, "tx {tx}: {text}");
        assert!(text.contains(needle), "tx {tx}: {text:?} lacks {needle:?}");
    };
    expect(1, ErrorCode::NoSuchTable, "999");
    expect(2, ErrorCode::SchemaVersion, "\"accounts\"");
    expect(3, ErrorCode::BadKey, "\"accounts\"");
    expect(4, ErrorCode::BadKey, "no key section");
    expect(5, ErrorCode::BadValue, "\"balance\"");
    expect(6, ErrorCode::Protocol, "unknown operation 77");
    expect(7, ErrorCode::Protocol, "announced 5 operations, 0 arrived");
    let dict = answers.iter().find(|(g, d, _)| *g == DICT_REF && d[0] == 9).expect("the bad definition is refused");
    assert_eq!(ErrorCode::from_u32(dict.1[1]), Some(ErrorCode::BadSchema), "{}", dict.2);
    // Nothing was answered to the internal signals: they were dropped.
    assert!(!answers.iter().any(|(g, _, _)| *g == LQH_KEYREF || *g == COMMIT_CONF), "{answers:?}");

    // 7. A transaction left open by a raw client that disconnects: its lock goes.
    let (tx_low, tx_high) = split(8);
    let upd = TcKeyReq { tx_low, tx_high, op_no: 0, table: t.id, table_version: t.version, operation: OpKind::Update as u32, lock: 0, map_version: 1 };
    let value = engine::row::bytes_to_words(&engine::row::encode_attributes(&t, &[(1, Value::I64(77))]).unwrap());
    raw.send(tc, TC_KEYREQ, upd.as_words(), &[&key, &value]);
    raw.send(tc, TC_EXECREQ, TcExecReq { tx_low, tx_high, exec: Exec::NoCommit as u32, operations: 1, durability: 0 }.as_words(), &[]);
    let answers = raw.collect(Duration::from_millis(300));
    assert!(answers.iter().any(|(g, d, _)| *g == TC_EXECCONF && d[0] == tx_low), "{answers:?}");
    drop(raw);

    // The node still serves: the row is intact and writable once the raw client is gone.
    let mut tx = s.begin();
    tx.update(&t, &[Value::I64(1)], &[("balance", Value::I64(11))]).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    let mut tx = s.begin();
    let r = tx.read(&t, &[Value::I64(1)], LockMode::CommittedRead).unwrap();
    s.execute(&mut tx, Exec::Commit).unwrap();
    assert_eq!(tx.row(r).unwrap().get("balance"), Some(&Value::I64(11)));
    assert!(cluster.all_running());
}

/// Hostile scans from a raw API node: programs with registers or columns out of range, a
/// backward jump, no terminator, a huge constant, a program over the size limit, a malformed
/// scan section, an unknown index, and internal scan signals from an API node. Each gets a
/// `SCAN_TABREF` naming what was wrong (or is dropped), and the node keeps scanning for others.
#[test]
fn hostile_scans_are_refused_by_name_and_the_node_keeps_scanning() {
    use engine::program::{Constant, Instr, Output, Program, RegType};
    use engine::scan::ScanSpec;

    let mut cluster = TestCluster::start("bad-scans", Shape::default());
    let mut api = cluster.connect(0);
    let mut s = api.session().unwrap();
    let t = s.create_table(&accounts_def(4)).unwrap();
    let mut tx = s.begin();
    for id in 0..50i64 {
        tx.insert(&t, &[("id", Value::I64(id)), ("balance", Value::I64(id))]).unwrap();
    }
    s.execute(&mut tx, Exec::Commit).unwrap();

    let mut raw = Raw::connect(&cluster, 105);
    let tc = BlockRef::new(NodeId::new(1).unwrap(), COORDINATOR, BlockInstance(0));
    let returns = |code: Vec<Instr>, registers: Vec<RegType>, constants: Vec<Constant>| Program {
        registers,
        constants,
        code,
        output: vec![Output::Column(0)],
        ..Program::default()
    };
    let programs: Vec<(Vec<u8>, &str)> = vec![
        (returns(vec![Instr::LoadColumn { dst: 40, column: 1 }, Instr::Return], vec![RegType::I64], vec![]).encode(), "register 40"),
        (returns(vec![Instr::LoadColumn { dst: 0, column: 99 }, Instr::Return], vec![RegType::I64], vec![]).encode(), "column 99"),
        (
            returns(vec![Instr::Return, Instr::Jump { target: 0 }, Instr::Return], vec![], vec![]).encode(),
            "instruction 1",
        ),
        (returns(vec![Instr::LoadColumn { dst: 0, column: 1 }], vec![RegType::I64], vec![]).encode(), "the last instruction must be"),
        (
            returns(
                vec![Instr::LoadConst { dst: 0, constant: 0 }, Instr::Return],
                vec![RegType::Text],
                vec![Constant::Value(Value::Text("x".repeat(70_000)))],
            )
            .encode(),
            "limit",
        ),
        (vec![0xff; 300], "malformed"),
    ];
    let mut expected = Vec::new();
    for (i, (program, needle)) in programs.into_iter().enumerate() {
        let spec = ScanSpec { index: None, ranges: vec![], program }.encode();
        let words = engine::row::bytes_to_words(&spec);
        if words.len() > 2048 {
            // Over the cluster's section limit (max_section_words = 2048 here): the sending
            // side refuses it before it leaves (the verifier's own byte limit is unit-tested).
            let sections: [&[u32]; 1] = [&words];
            let signal = Signal::new(SCAN_TABREQ, raw.me, tc).sections(&sections);
            assert!(raw.send.pack(tc.node, &signal).is_err(), "a {}-word section was accepted", words.len());
            continue;
        }
        let req = ScanTabReq { scan_id: i as u32 + 1, table: t.id, table_version: t.version, batch_rows: 10, batch_bytes: 4096, ..ScanTabReq::default() };
        raw.send(tc, SCAN_TABREQ, req.as_words(), &[&words]);
        expected.push((i as u32 + 1, needle));
    }
    // An unknown index, a spec that is not a spec, an unknown lock mode.
    let good = Program { output: vec![Output::Column(0)], code: vec![Instr::Return], ..Program::default() }.encode();
    let spec = ScanSpec { index: Some(7), ranges: vec![], program: good.clone() }.encode();
    let req = |scan_id: u32| ScanTabReq { scan_id, table: t.id, table_version: t.version, batch_rows: 10, batch_bytes: 4096, ..ScanTabReq::default() };
    raw.send(tc, SCAN_TABREQ, req(20).as_words(), &[&engine::row::bytes_to_words(&spec)]);
    raw.send(tc, SCAN_TABREQ, req(21).as_words(), &[&[7, 1, 2]]);
    let spec = ScanSpec { index: None, ranges: vec![], program: good }.encode();
    raw.send(tc, SCAN_TABREQ, ScanTabReq { lock: 9, ..req(22) }.as_words(), &[&engine::row::bytes_to_words(&spec)]);
    // Internal scan signals from an API node are dropped.
    let storage = BlockRef::new(NodeId::new(1).unwrap(), STORAGE, BlockInstance(0));
    raw.send(storage, SCAN_FRAGREQ, ScanFragReq::default().as_words(), &[&engine::row::bytes_to_words(&spec)]);
    raw.send(storage, SCAN_LOCK_RELEASE, ScanLockRelease::default().as_words(), &[]);
    raw.send(tc, SCAN_FRAGCONF, ScanFragConf::default().as_words(), &[]);

    let answers = raw.collect(Duration::from_millis(1500));
    let refusal = |id: u32| answers.iter().find(|(g, d, _)| *g == SCAN_TABREF && d[0] == id).cloned();
    for (id, needle) in expected {
        let (_, d, text) = refusal(id).unwrap_or_else(|| panic!("no refusal for scan {id}: {answers:?}"));
        assert_eq!(ErrorCode::from_u32(d[1]), Some(ErrorCode::BadProgram), "scan {id}: {text}");
        assert!(text.contains(needle), "scan {id}: {text:?} lacks {needle:?}");
    }
    assert!(refusal(20).is_some_and(|r| r.2.contains("index")), "{answers:?}");
    assert!(refusal(21).is_some(), "{answers:?}");
    assert!(refusal(22).is_some_and(|r| r.2.contains("lock mode 9")), "{answers:?}");
    assert!(!answers.iter().any(|(g, _, _)| *g == SCAN_FRAGCONF || *g == SCAN_FRAGREF), "{answers:?}");
    drop(raw);

    // The node still scans for a well-behaved client.
    let rows = s.scan(&client::ScanRequest::new(&t)).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(rows.len(), 50);
    assert!(cluster.all_running());
}
