//! Ordinary zip tools open what the writer makes.

use std::io::Write;
use std::process::Command;

use crate::util::*;

fn bundle_file() -> tempfile::NamedTempFile {
    let (bytes, _) = standard_bundle();
    let mut f = tempfile::Builder::new()
        .suffix(".berth.zip")
        .tempfile()
        .unwrap();
    f.write_all(&bytes).unwrap();
    f.flush().unwrap();
    f
}

/// Fails the test, with what to do, when `cmd` is not installed: a missing tool is not a pass.
fn need(cmd: &str, arg: &str) {
    let ok = Command::new(cmd).arg(arg).output().is_ok();
    assert!(
        ok,
        "this test needs `{cmd}`, which is not installed; .ci/run installs it"
    );
}

#[test]
fn python_zipfile_reads_it() {
    need("python3", "--version");
    let f = bundle_file();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import zipfile,sys\n\
             z=zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             assert z.read('payload/report.txt')==b'all good\\n'\n\
             print(len(z.namelist()))",
        )
        .arg(f.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python zipfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
}

#[test]
fn unzip_tests_it() {
    need("unzip", "-v");
    let f = bundle_file();
    let out = Command::new("unzip")
        .arg("-t")
        .arg(f.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "unzip -t: {stdout}");
    assert!(stdout.contains("No errors detected"), "{stdout}");
    let out = Command::new("unzip")
        .arg("-p")
        .arg(f.path())
        .arg("manifest.toml")
        .output()
        .unwrap();
    let manifest = String::from_utf8_lossy(&out.stdout);
    assert!(manifest.starts_with("format = 1\n"), "{manifest}");
}
