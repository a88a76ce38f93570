//! `Broker::from_env` connects as `psql` would: `$DATABASE_URL`, else the `PG*` variables and
//! `~/.pgpass`. Run in a child process (this test binary again) with a controlled
//! environment, since the environment is process-wide.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pgbroker::Broker;

use super::tls;

const CHILD: &str = "PGBROKER_TEST_FROM_ENV_CHILD";

/// Does the work inside the child process; a no-op in a normal run.
#[test]
fn child_from_env() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match Broker::from_env() {
        Ok(broker) => {
            let row = broker
                .conn()
                .unwrap()
                .query_one(
                    "SELECT current_user::text, current_database()::text, ssl
                       FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .unwrap();
            let (user, db, ssl): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
            println!("CHILD ok {user} {db} ssl={ssl}");
        }
        Err(e) => println!("CHILD err {:?} {e}", e.kind()),
    }
}

/// Runs `child_from_env` with only `vars` (plus PATH) in its environment; its one line.
fn child(vars: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "env::child_from_env",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(CHILD, "1")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "no CHILD line: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

#[test]
fn from_env_reads_the_pg_variables_and_pgpass() {
    let s = tls::server();
    let home = std::env::temp_dir().join(format!("pgbroker-from-env-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let pgpass = home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "localhost:{}:tls_app:postgres:{}\n",
            s.pg.port(),
            tls::PASSWORD.replace(':', "\\:")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = s.pg.port().to_string();
    let ca = s.certs.path("ca.crt");
    let home_s = home.display().to_string();
    let mut vars = vec![
        ("HOME", home_s.as_str()),
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGDATABASE", "tls_app"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ];
    assert_eq!(child(&vars), "ok postgres tls_app ssl=true");

    // The root certificate from its default place, ~/.postgresql/root.crt.
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    std::fs::copy(&ca, home.join(".postgresql/root.crt")).unwrap();
    let no_root: Vec<_> = vars
        .iter()
        .copied()
        .filter(|(k, _)| *k != "PGSSLROOTCERT")
        .collect();
    assert_eq!(child(&no_root), "ok postgres tls_app ssl=true");

    // PGSSLMODE=disable against the TLS-only server: refused, and said so.
    vars.push(("PGSSLMODE", "disable"));
    vars.retain(|(k, v)| *k != "PGSSLMODE" || *v == "disable");
    let line = child(&vars);
    assert!(
        line.starts_with(&format!("err Tls TLS error: localhost:{port} requires TLS")),
        "{line}"
    );

    // $DATABASE_URL wins over the PG* variables.
    let url = s.url("sslmode=require&dbname=postgres");
    vars.push(("DATABASE_URL", url.as_str()));
    assert_eq!(child(&vars), "ok postgres postgres ssl=true");
    std::fs::remove_dir_all(&home).unwrap();
}
