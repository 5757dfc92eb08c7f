//! The LVM snapshot provider against real LVM tools on a loop device: the
//! volume group and its logical volume are LVM's own metadata, read back
//! through `lvs` by drp. What a snapshot needs before LVM is asked (a
//! classic volume's copy-on-write space), a volume that does not exist and
//! a badly written volume are each refused with what to do, and `guard`
//! then does not run the change.
//!
//! Taking, merging and removing snapshot LVs needs the kernel's
//! device-mapper (`dm_snapshot`, `dm_thin_pool`), which these tests do not
//! assume: the volume is created inactive (`--driverloaded n`).

use std::process::Command;

use crate::harness::{Scratch, scratch};

/// A volume group on a loop device, private to the test through its own
/// `lvm.conf` (`LVM_SYSTEM_DIR`), removed with the device on drop.
struct VolumeGroup {
    name: String,
    conf: std::path::PathBuf,
    loop_dev: String,
}

fn lvm(conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("LVM_SYSTEM_DIR", conf)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`{}` cannot run ({e}): tests/services/setup.sh installs lvm2",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl VolumeGroup {
    fn new(s: &Scratch) -> VolumeGroup {
        let image = s.path("pv.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let loop_dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let conf = s.path("lvm");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("lvm.conf"),
            format!(
                "devices {{\n  filter = [ \"a|^{loop_dev}$|\", \"r|.*|\" ]\n  obtain_device_list_from_udev = 0\n}}\nactivation {{\n  udev_sync = 0\n  udev_rules = 0\n}}\n"
            ),
        )
        .unwrap();
        let name = format!("drp{}", s.id.replace('_', ""));
        let vg = VolumeGroup {
            name,
            conf,
            loop_dev,
        };
        lvm(&vg.conf, &["pvcreate", &vg.loop_dev]);
        lvm(&vg.conf, &["vgcreate", &vg.name, &vg.loop_dev]);
        vg
    }

    /// A classic logical volume, created inactive.
    fn classic(&self, lv: &str) {
        lvm(
            &self.conf,
            &[
                "lvcreate",
                "--driverloaded",
                "n",
                "--activate",
                "n",
                "--zero",
                "n",
                "-L",
                "8M",
                "-n",
                lv,
                &self.name,
            ],
        );
    }
}

impl Drop for VolumeGroup {
    fn drop(&mut self) {
        let _ = Command::new("vgremove")
            .args(["-f", &self.name])
            .env("LVM_SYSTEM_DIR", &self.conf)
            .output();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .output();
    }
}

#[test]
fn lvm_snapshots_are_refused_with_what_to_do_before_lvm_is_asked_and_guard_runs_nothing() {
    let mut s = scratch("lvm");
    let vg = VolumeGroup::new(&s);
    vg.classic("data");
    s.set_env("LVM_SYSTEM_DIR", vg.conf.to_str().unwrap());
    s.set_env("LVM_SUPPRESS_FD_WARNINGS", "1");
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nsnapshots:\n  data: {{kind: lvm, volume: {vg}/data}}\n  gone: {{kind: lvm, volume: {vg}/nope, size: 1GiB}}\n",
            vg = vg.name
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["init", "--policy", p]).ok();

    let run = s.agent(&[
        "guard", "--policy", p, "--change", "CHG-1", "--reason", "r", "--", "touch", "changed",
    ]);
    run.code(1);
    assert!(
        run.stderr.contains("the change was not run"),
        "{}",
        run.stderr
    );
    assert!(!s.path("changed").exists(), "the change did not run");
    assert!(
        run.stdout.contains(&format!(
            "data (lvm): FAILED: {}/data is a classic (thick) logical volume: its snapshots need copy-on-write space; give the snapshot a `size`",
            vg.name
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "gone (lvm): FAILED: logical volume {}/nope cannot be read",
            vg.name
        )),
        "{}",
        run.stdout
    );
    // Nothing was made on the volume group: `data` alone, as before.
    let lvs = lvm(
        &vg.conf,
        &["lvs", "--noheadings", "-o", "lv_name", &vg.name],
    );
    let names: Vec<String> = String::from_utf8_lossy(&lvs.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names, ["data"]);
    let listed = s.agent(&["--json", "snapshot", "list", "--policy", p]);
    assert_eq!(listed.json()["sets"][0]["status"], "failed");
}

#[test]
fn a_badly_written_lvm_snapshot_is_located() {
    let s = scratch("lvmcheck");
    let p = s.write(
        "policy.yaml",
        "host: web-1\ntargets:\n  nas: {kind: local, path: nas}\nsnapshots:\n  a: {kind: lvm, volume: data}\n  b: {kind: lvm, volume: vg0/data, size: 2GB}\n",
    );
    let run = s.drp(&["check", p.to_str().unwrap()]);
    run.code(2);
    let all = run.all();
    assert!(
        all.contains("5:3: `snapshots.a`: `data` is not a logical volume: write it as `<volume group>/<logical volume>`"),
        "{all}"
    );
    assert!(
        all.contains("6:3: `snapshots.b`: invalid snapshot size `2GB`: write it like 2GiB, 512MiB or 20%ORIGIN"),
        "{all}"
    );
}
