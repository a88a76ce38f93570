//! The C programs: ffi/tests/c/test_pgbroker.c (every function and its error paths, under
//! valgrind when it is installed) and ffi/examples/worker.c, built with the system C compiler
//! against the libpgbroker this test was built with, run against the test's private cluster.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pgbroker_testing::TestServer;

/// target/<profile>, with libpgbroker.so and libpgbroker.a freshly built there. Cargo builds
/// a cdylib/staticlib-only library for its tests' sake only when it changed nothing else, so
/// the test builds it itself (once per run), with the cargo and profile that run the test.
fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .to_path_buf();
            let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build.args(["build", "--quiet", "-p", "pgbroker-ffi", "--lib"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let output = build.output().expect("running cargo build");
            assert_success(&output, "cargo build -p pgbroker-ffi");
            for lib in ["libpgbroker.so", "libpgbroker.a"] {
                assert!(
                    dir.join(lib).is_file(),
                    "{} missing",
                    dir.join(lib).display()
                );
            }
            dir
        })
        .clone()
}

fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles `source` into `out`: linked against libpgbroker.so (with an rpath), or the
/// static libpgbroker.a.
fn compile(source: &str, out: &str, static_link: bool) -> PathBuf {
    let lib = lib_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(out);
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args([
        "-std=gnu11",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
    ])
    .arg("-I")
    .arg(ffi_dir().join("include"))
    .arg(ffi_dir().join(source))
    .arg("-o")
    .arg(&exe);
    if static_link {
        // OpenSSL: the `tls` feature of the core (on by default) links it.
        cc.arg(lib.join("libpgbroker.a"))
            .args(["-lssl", "-lcrypto", "-lpthread", "-ldl", "-lm"]);
    } else {
        cc.arg("-L")
            .arg(&lib)
            .arg("-lpgbroker")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let output = cc.output().expect("running the C compiler (cc)");
    assert_success(&output, &format!("compiling {source}"));
    exe
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A URL of a port on this machine nobody listens on (it was free a moment ago).
fn unreachable_url() -> String {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("postgres://nobody@127.0.0.1:{port}/nothing?connect_timeout=5")
}

fn have_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn c_test_program_passes() {
    let exe = compile("tests/c/test_pgbroker.c", "test_pgbroker", false);
    let db = TestServer::shared()
        .create_database()
        .expect("test database");
    let output = Command::new(&exe)
        .arg(db.url())
        .arg(unreachable_url())
        .arg(TestServer::shared().url_for("pgbroker_ffi_no_such_database"))
        .output()
        .expect("running test_pgbroker");
    assert_success(&output, "test_pgbroker");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("all checks passed"));
}

#[test]
fn c_test_program_is_valgrind_clean() {
    if !have_valgrind() {
        // CI installs valgrind (.ci/run); a developer machine may not have it.
        eprintln!("valgrind not installed: skipping the memory check of test_pgbroker");
        return;
    }
    let exe = compile("tests/c/test_pgbroker.c", "test_pgbroker_vg", false);
    let db = TestServer::shared()
        .create_database()
        .expect("test database");
    let output = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--error-exitcode=1",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--quiet",
        ])
        .arg(format!(
            "--suppressions={}",
            ffi_dir().join("tests/c/valgrind.supp").display()
        ))
        .arg(&exe)
        .arg(db.url())
        .arg(unreachable_url())
        .arg(TestServer::shared().url_for("pgbroker_ffi_no_such_database"))
        .output()
        .expect("running valgrind");
    assert_success(&output, "test_pgbroker under valgrind");
    assert!(String::from_utf8_lossy(&output.stdout).contains("all checks passed"));
}

#[test]
fn worker_example_runs() {
    let exe = compile("examples/worker.c", "worker", true);
    let db = TestServer::shared()
        .create_database()
        .expect("test database");
    let output = Command::new(&exe)
        .env("DATABASE_URL", db.url())
        .output()
        .expect("running worker");
    assert_success(&output, "examples/worker.c");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("worked 10 jobs"), "{stdout}");
    assert!(stdout.contains("read 3 events"), "{stdout}");
}
