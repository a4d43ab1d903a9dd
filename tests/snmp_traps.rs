//! SNMP traps against real tools: net-snmp's snmptrapd decodes, authenticates and decrypts
//! what `hamon::notify::snmp` sends (v2c, and v3 authPriv with SHA-1, SHA-256 and SHA-512,
//! each with AES) and names every object from `docs/mib/HAMON-MIB.txt`; libsmi's smilint finds
//! no error in the MIB.
//!
//! Needs the Debian packages `snmptrapd` and `smitools`, plus `npm` and `tar` to fetch the
//! SMIv2 base MIBs (SNMPv2-SMI, -TC, -CONF, -MIB) from the `net-snmp` npm package; they are
//! cached under target/tmp. Without these tools the tests are skipped, except under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod receivers;

use receivers::*;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use hamon::notify::snmp::{
    engine_id_random, role, severity, AuthProto, HamonEvent, PrivProto, Secret, Sender, Target,
    V3User, Version, ENTERPRISE, HAMON_FAILOVER,
};

fn smilint(mib: &Path, smipath: &Path) -> String {
    let out = Command::new("smilint")
        .args(["-s", "-l", "3"])
        .arg(mib)
        .env("SMIPATH", smipath)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn has_error(lint: &str) -> bool {
    ["[0]", "[1]", "[2]"].iter().any(|s| lint.contains(s))
}

/// `smilint -s -l 3`: no message of severity 0-2. The base MIBs are found through SMIPATH
/// rather than preloaded with `-p`: preloading makes libsmi lint the npm copies of
/// SNMPv2-SMI and SNMPv2-TC themselves, which it complains about.
#[test]
fn mib_passes_smilint() {
    if !have("smilint", "-V") || !have("npm", "--version") || !have("tar", "--version") {
        return;
    }
    let mibs = base_mibs();
    let lint = smilint(&Path::new(MIB_DIR).join("HAMON-MIB.txt"), &mibs);
    assert!(!has_error(&lint), "smilint:\n{lint}");

    // The check can fail: the same MIB without its base modules is an error.
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-mibs");
    std::fs::create_dir_all(&empty).unwrap();
    let lint = smilint(&Path::new(MIB_DIR).join("HAMON-MIB.txt"), &empty);
    assert!(
        has_error(&lint),
        "smilint found no error without SNMPv2-SMI:\n{lint}"
    );
}

fn event(description: &str) -> HamonEvent {
    HamonEvent {
        node_name: "node-a".into(),
        role: role::PRIMARY,
        state: "active".into(),
        previous_state: "standby".into(),
        severity: severity::MAJOR,
        event_id: 42,
        description: description.into(),
        peer_address: "192.0.2.7".into(),
    }
}

fn v3(user: &str, auth: AuthProto, auth_pw: &str, priv_pw: &str) -> Version {
    Version::V3(V3User {
        user: user.as_bytes().to_vec(),
        auth: (auth, Secret::Password(auth_pw.as_bytes().to_vec())),
        privacy: Some((
            PrivProto::Aes128,
            Secret::Password(priv_pw.as_bytes().to_vec()),
        )),
    })
}

#[test]
fn snmptrapd_decodes_v2c_and_v3_traps() {
    if !have("snmptrapd", "--version") || !have("npm", "--version") || !have("tar", "--version") {
        return;
    }
    let mibs = base_mibs();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trapd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let engine_id = engine_id_random(ENTERPRISE).unwrap();
    let hex: String = engine_id.iter().map(|b| format!("{b:02x}")).collect();
    let conf = format!(
        "disableAuthorization yes\n\
         authCommunity log public\n\
         createUser -e 0x{hex} hamonsha1 SHA authpass-1 AES privpass-1\n\
         createUser -e 0x{hex} hamonsha256 SHA-256 authpass-256 AES privpass-256\n\
         createUser -e 0x{hex} hamonsha512 SHA-512 authpass-512 AES privpass-512\n\
         authUser log hamonsha1 priv\n\
         authUser log hamonsha256 priv\n\
         authUser log hamonsha512 priv\n"
    );
    // A free port: bound, read, released (snmptrapd binds it right after).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let trapd = Trapd::start(&dir, &conf, port, &mibs);

    let sender = Sender::new(engine_id, 1, Instant::now()).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let send = |version: Version, marker: &str| {
        let target = Target { addr, version };
        sender.prepare(&target).unwrap();
        let n = event(marker).notification(HAMON_FAILOVER);
        sender.send(&target, &n, 4242).unwrap();
    };
    // Refused by snmptrapd: sent first, so by the time the later traps are logged, it would
    // have been too.
    send(
        v3("hamonsha1", AuthProto::Sha1, "wrong-password", "privpass-1"),
        "marker-wrong-key",
    );
    send(
        Version::V2c {
            community: b"public".to_vec(),
        },
        "marker-v2c",
    );
    send(
        v3("hamonsha1", AuthProto::Sha1, "authpass-1", "privpass-1"),
        "marker-v3-sha1",
    );
    send(
        v3(
            "hamonsha256",
            AuthProto::Sha256,
            "authpass-256",
            "privpass-256",
        ),
        "marker-v3-sha256",
    );
    send(
        v3(
            "hamonsha512",
            AuthProto::Sha512,
            "authpass-512",
            "privpass-512",
        ),
        "marker-v3-sha512",
    );
    let markers = [
        "marker-v2c",
        "marker-v3-sha1",
        "marker-v3-sha256",
        "marker-v3-sha512",
    ];
    let log = trapd.wait_for(|log| markers.iter().all(|m| log.contains(m)), "4 traps");
    eprintln!("snmptrapd log:\n{log}");
    assert!(
        !log.contains("marker-wrong-key"),
        "a trap with a wrong key was accepted"
    );

    for marker in markers {
        let line = log.lines().find(|l| l.contains(marker)).unwrap();
        for want in [
            "SNMPv2-MIB::sysUpTime.0 = Timeticks: (4242)",
            "SNMPv2-MIB::snmpTrapOID.0 = OID: HAMON-MIB::hamonFailover",
            "HAMON-MIB::hamonNodeName.0 = STRING: node-a",
            "HAMON-MIB::hamonRole.0 = INTEGER: primary(1)",
            "HAMON-MIB::hamonState.0 = STRING: active",
            "HAMON-MIB::hamonPreviousState.0 = STRING: standby",
            "HAMON-MIB::hamonSeverity.0 = INTEGER: major(2)",
            "HAMON-MIB::hamonEventId.0 = Gauge32: 42",
            "HAMON-MIB::hamonPeerAddress.0 = STRING: 192.0.2.7",
        ] {
            assert!(line.contains(want), "{marker}: no {want:?} in\n{line}");
        }
        assert!(!line.contains("1.3.6.1.4.1.99999"), "raw OID in\n{line}");
    }
    drop(trapd);
    let _ = std::fs::remove_dir_all(&dir);
}
