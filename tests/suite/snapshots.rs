//! Pre-change snapshot sets for every provider, against real btrfs (loop
//! device), real qcow2 images and the EC2/RDS API emulator: create, list,
//! roll back (checking the data), expire, and `guard`.

use std::process::Command;

use crate::harness::{Run, Scratch, scratch, services, tree_digest};

fn policy(s: &Scratch, snapshots: &str, extra: &str) -> String {
    s.write(
        "policy.yaml",
        &format!("host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\n{extra}snapshots:\n{snapshots}"),
    )
    .display()
    .to_string()
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn btrfs_subvolume(s: &Scratch) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(services().get("DRP_TEST_BTRFS")).join(&s.id);
    std::fs::create_dir_all(&root).unwrap();
    let sub = root.join("data");
    sh(&format!("btrfs subvolume create {}", sub.display()));
    sub
}

#[test]
fn btrfs_snapshot_rollback_and_a_path_that_is_not_a_subvolume() {
    let s = scratch("btrfs");
    let sub = btrfs_subvolume(&s);
    std::fs::write(sub.join("config.ini"), "version = 1\n").unwrap();
    std::fs::create_dir_all(sub.join("www")).unwrap();
    std::fs::write(sub.join("www/index.html"), "<h1>v1</h1>").unwrap();
    let before = tree_digest(&sub);
    let p = policy(
        &s,
        &format!("  data: {{kind: btrfs, subvolume: {}}}\n", sub.display()),
        "",
    );
    let created = s.agent(&[
        "--json",
        "snapshot",
        "create",
        "--policy",
        &p,
        "--change",
        "CHG-1",
        "--reason",
        "upgrade to v2",
    ]);
    created.ok();
    let set = created.json();
    assert_eq!(set["status"], "complete");
    let snap = set["members"][0]["reference"].as_str().unwrap().to_string();
    assert!(
        sh(&format!("btrfs subvolume show {snap}")).contains("readonly")
            || sh(&format!("btrfs property get -ts {snap} ro")).contains("true")
    );

    // The change goes wrong.
    std::fs::write(sub.join("config.ini"), "version = 2 # broken\n").unwrap();
    std::fs::remove_file(sub.join("www/index.html")).unwrap();
    let refused = s.agent(&["snapshot", "rollback", "--policy", &p, "--change", "CHG-1"]);
    refused.code(5);
    assert!(
        refused.stderr.contains("data (btrfs)"),
        "the plan names what it rolls back: {}",
        refused.stderr
    );
    // `drp restore --change` is the on-call engineer's way to the same rollback.
    let r = s.drp(&["restore", "--policy", &p, "--change", "CHG-1", "--yes"]);
    r.ok();
    assert!(
        r.stdout.contains("the replaced state is kept at"),
        "{}",
        r.stdout
    );
    assert_eq!(
        tree_digest(&sub),
        before,
        "the subvolume holds the state from before the change"
    );
    let listed = s.agent(&[
        "--json",
        "snapshot",
        "list",
        "--policy",
        &p,
        "--provider",
        "btrfs",
    ]);
    assert_eq!(listed.json()["sets"][0]["status"], "rolled_back");

    // Status and metrics say when each declared snapshot was last taken.
    let status = s.agent(&["--json", "status", "--policy", &p]);
    let snap_status = &status.json()["snapshots"][0];
    assert_eq!(snap_status["snapshot"], "data");
    assert_eq!(snap_status["change"], "CHG-1");
    assert!(snap_status["age_seconds"].as_i64().unwrap() < 300);
    let p_metrics = policy(
        &s,
        &format!("  data: {{kind: btrfs, subvolume: {}}}\n", sub.display()),
        "metrics: {textfile: drp.prom}\n",
    );
    s.agent(&[
        "snapshot", "create", "--policy", &p_metrics, "--change", "CHG-2b", "--reason", "metrics",
    ])
    .ok();
    let prom_text = std::fs::read_to_string(s.path("drp.prom")).unwrap();
    assert!(prom_text.contains("drp_snapshot_last_success_timestamp_seconds{host=\"web-1\",snapshot=\"data\",kind=\"btrfs\"}"), "{prom_text}");

    // Expiry keeps the newest set and deletes the older snapshot.
    let p3 = policy(
        &s,
        &format!("  data: {{kind: btrfs, subvolume: {}}}\n", sub.display()),
        "snapshot_retention: {keep_last: 1}\n",
    );
    s.agent(&[
        "snapshot", "create", "--policy", &p3, "--change", "CHG-3", "--reason", "later",
    ])
    .ok();
    s.agent(&["snapshot", "expire", "--policy", &p3]).ok();
    assert!(
        !std::path::Path::new(&snap).exists(),
        "the expired snapshot is deleted"
    );
    let sets = s
        .agent(&["--json", "snapshot", "list", "--policy", &p3])
        .json()["sets"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["change"], "CHG-3");

    // A plain directory is not a subvolume: the set is failed, and says why.
    let plain = s.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let p2 = policy(
        &s,
        &format!("  data: {{kind: btrfs, subvolume: {}}}\n", plain.display()),
        "",
    );
    let bad = s.agent(&[
        "snapshot", "create", "--policy", &p2, "--change", "CHG-2", "--reason", "x",
    ]);
    bad.code(1);
    assert!(
        bad.stdout.contains("is not a btrfs subvolume"),
        "{}",
        bad.stdout
    );
    let rb = s.agent(&[
        "snapshot", "rollback", "--policy", &p2, "--change", "CHG-2", "--yes",
    ]);
    rb.code(1);
    assert!(
        rb.stderr.contains("incomplete"),
        "a failed set is never rolled back to: {}",
        rb.stderr
    );
    let unknown = s.agent(&[
        "snapshot", "rollback", "--policy", &p2, "--change", "NOPE", "--yes",
    ]);
    unknown.code(6);
}

#[test]
fn qcow2_snapshot_rollback_and_an_image_in_use() {
    let s = scratch("qcow2");
    let img = s.path("vm.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 {} 64M",
        img.display()
    ));
    sh(&format!(
        "qemu-io -c 'write -P 0xaa 0 1M' {}",
        img.display()
    ));
    let p = policy(
        &s,
        &format!("  disk: {{kind: qcow2, image: {}}}\n", img.display()),
        "",
    );
    s.agent(&[
        "snapshot",
        "create",
        "--policy",
        &p,
        "--change",
        "KERNEL-5",
        "--reason",
        "kernel upgrade",
    ])
    .ok();
    assert!(sh(&format!("qemu-img snapshot -l {}", img.display())).contains("drp-"));
    sh(&format!(
        "qemu-io -c 'write -P 0xbb 0 1M' {}",
        img.display()
    ));
    s.agent(&[
        "snapshot", "rollback", "--policy", &p, "--change", "KERNEL-5", "--yes",
    ])
    .ok();
    // The image content is the one from before the change.
    let check = sh(&format!("qemu-io -c 'read -P 0xaa 0 1M' {}", img.display()));
    assert!(check.contains("read 1048576/1048576"), "{check}");

    // Expiry deletes the older internal snapshot.
    let first_tag = sh(&format!("qemu-img snapshot -l {}", img.display()));
    let p = policy(
        &s,
        &format!("  disk: {{kind: qcow2, image: {}}}\n", img.display()),
        "snapshot_retention: {keep_last: 1}\n",
    );
    s.agent(&[
        "snapshot",
        "create",
        "--policy",
        &p,
        "--change",
        "KERNEL-5b",
        "--reason",
        "again",
    ])
    .ok();
    s.agent(&["snapshot", "expire", "--policy", &p]).ok();
    let tags = sh(&format!("qemu-img snapshot -l {}", img.display()));
    assert_eq!(tags.matches("drp-").count(), 1, "{first_tag} -> {tags}");
    assert!(tags.contains("KERNEL-5b"), "{tags}");

    // An image held open (as by a running VM) is refused, untouched.
    let sock = s.path("nbd.sock");
    let mut holder = Command::new("qemu-nbd")
        .args([
            "-k",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            img.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !sock.exists() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let busy = s.agent(&[
        "snapshot", "create", "--policy", &p, "--change", "KERNEL-6", "--reason", "y",
    ]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    busy.code(1);
    assert!(busy.stdout.contains("is in use"), "{}", busy.stdout);
    assert_eq!(
        sh(&format!("qemu-img snapshot -l {}", img.display()))
            .matches("drp-")
            .count(),
        1
    );
}

#[test]
fn directory_snapshots_go_through_the_pipeline_and_guard_rolls_back_failed_changes() {
    let s = scratch("guard");
    let site = s.path("site");
    std::fs::create_dir_all(site.join("conf")).unwrap();
    std::fs::write(site.join("conf/app.conf"), "workers = 4\n").unwrap();
    std::fs::write(site.join("index.html"), "<h1>ok</h1>").unwrap();
    let before = tree_digest(&site);
    let p = policy(
        &s,
        "  site: {kind: directory, path: site, targets: [nas]}\n",
        "snapshot_retention: {keep_last: 2}\n",
    );

    // A failing change is rolled back.
    let run = s.agent(&[
        "guard",
        "--policy",
        &p,
        "--change",
        "DEP-1",
        "--reason",
        "deploy 1",
        "--",
        "sh",
        "-c",
        "echo 'workers = oops' > site/conf/app.conf; rm site/index.html; exit 3",
    ]);
    run.code(1);
    assert!(run.stderr.contains("the change exited 3"), "{}", run.stderr);
    assert_eq!(tree_digest(&site), before);
    let listed = s.agent(&[
        "--json", "snapshot", "list", "--policy", &p, "--change", "DEP-1",
    ]);
    let guard = &listed.json()["sets"][0]["guard"];
    assert_eq!(guard["exit_code"], 3);
    assert_eq!(guard["rolled_back"], true);

    // A change killed by a signal is rolled back too.
    let run = s.agent(&[
        "guard",
        "--policy",
        &p,
        "--change",
        "DEP-2",
        "--reason",
        "deploy 2",
        "--",
        "sh",
        "-c",
        "echo broken > site/index.html; kill -9 $$",
    ]);
    run.code(1);
    assert!(run.stderr.contains("killed by signal 9"), "{}", run.stderr);
    assert_eq!(tree_digest(&site), before);

    // A succeeding change is kept.
    s.agent(&[
        "guard",
        "--policy",
        &p,
        "--change",
        "DEP-3",
        "--reason",
        "deploy 3",
        "--",
        "sh",
        "-c",
        "echo '<h1>v3</h1>' > site/index.html",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(site.join("index.html")).unwrap(),
        "<h1>v3</h1>\n"
    );
    let listed = s.agent(&["--json", "snapshot", "list", "--policy", &p]);
    let sets = listed.json()["sets"].as_array().unwrap().clone();
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[2]["guard"]["rolled_back"], false);

    // Expiry keeps the two newest sets and deletes the archive of the oldest.
    let oldest_point = sets[0]["members"][0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    s.agent(&["snapshot", "expire", "--policy", &p]).ok();
    let left = s
        .agent(&["--json", "snapshot", "list", "--policy", &p])
        .json()["sets"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(left, 2);
    assert!(
        !s.path(&format!(
            "nas/web-1/snap-site/manifests/{oldest_point}.json"
        ))
        .exists()
    );
}

fn aws(s: &Scratch, args: &[&str]) -> serde_json::Value {
    // The test sets up the emulator's resources with the same SDK the agent uses.
    let _ = s;
    let endpoint = services().get("DRP_TEST_AWS_ENDPOINT").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await;
        match args {
            ["create-volume"] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                let v = c.create_volume().availability_zone("us-east-1a").size(8).send().await.unwrap();
                serde_json::json!({"volume_id": v.volume_id().unwrap()})
            }
            ["volume", id] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                let v = c.describe_volumes().volume_ids(*id).send().await.unwrap();
                let v = &v.volumes()[0];
                serde_json::json!({
                    "snapshot_id": v.snapshot_id(),
                    "tags": v.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect::<std::collections::BTreeMap<_, _>>(),
                })
            }
            ["run-instance"] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                let r = c
                    .run_instances()
                    .image_id("ami-12c6146b")
                    .min_count(1)
                    .max_count(1)
                    .instance_type(aws_sdk_ec2::types::InstanceType::T2Micro)
                    .placement(aws_sdk_ec2::types::Placement::builder().availability_zone("us-east-1a").build())
                    .send()
                    .await
                    .unwrap();
                let id = r.instances()[0].instance_id().unwrap().to_string();
                let d = c.describe_instances().instance_ids(&id).send().await.unwrap();
                let i = &d.reservations()[0].instances()[0];
                let root = i
                    .block_device_mappings()
                    .iter()
                    .find(|m| m.device_name() == i.root_device_name())
                    .and_then(|m| m.ebs())
                    .and_then(|e| e.volume_id())
                    .unwrap()
                    .to_string();
                serde_json::json!({"instance_id": id, "root_volume_id": root})
            }
            ["attach", vol, inst, dev] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                c.attach_volume().volume_id(*vol).instance_id(*inst).device(*dev).send().await.unwrap();
                serde_json::json!({})
            }
            ["attachment", vol] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                let v = c.describe_volumes().volume_ids(*vol).send().await.unwrap();
                let v = &v.volumes()[0];
                let a = v.attachments().first();
                serde_json::json!({
                    "state": v.state().map(|s| s.as_str().to_string()),
                    "instance_id": a.and_then(|a| a.instance_id()),
                    "device": a.and_then(|a| a.device()),
                })
            }
            ["snapshot-exists", id] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                serde_json::json!(c.describe_snapshots().snapshot_ids(*id).send().await.is_ok_and(|o| !o.snapshots().is_empty()))
            }
            ["snapshot", id] => {
                let c = aws_sdk_ec2::Client::new(&conf);
                let v = c.describe_snapshots().snapshot_ids(*id).send().await.unwrap();
                let sn = &v.snapshots()[0];
                serde_json::json!({
                    "volume_id": sn.volume_id(), "state": sn.state().map(|s| s.as_str().to_string()),
                    "tags": sn.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect::<std::collections::BTreeMap<_, _>>(),
                })
            }
            ["create-db", name] => {
                let c = aws_sdk_rds::Client::new(&conf);
                c.create_db_instance()
                    .db_instance_identifier(*name)
                    .db_instance_class("db.t3.micro")
                    .engine("postgres")
                    .allocated_storage(20)
                    .master_username("admin")
                    .master_user_password("not-a-real-secret")
                    .send()
                    .await
                    .unwrap();
                serde_json::json!({})
            }
            ["dbs"] => {
                let c = aws_sdk_rds::Client::new(&conf);
                let d = c.describe_db_instances().send().await.unwrap();
                serde_json::json!(d.db_instances().iter().map(|i| i.db_instance_identifier().unwrap_or_default().to_string()).collect::<Vec<_>>())
            }
            other => panic!("{other:?}"),
        }
    })
}

fn aws_policy(s: &Scratch, snapshots: &str) -> String {
    let ep = services().get("DRP_TEST_AWS_ENDPOINT");
    policy(s, &snapshots.replace("ENDPOINT", ep), "")
}

fn agent_aws(s: &Scratch, args: &[&str]) -> Run {
    let mut c = s.agent_cmd(args);
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    Run::from(c.output().unwrap())
}

#[test]
fn ebs_snapshot_tagged_with_the_change_and_rolled_back_to_a_new_volume() {
    let s = scratch("ebs");
    let vol = aws(&s, &["create-volume"])["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = aws_policy(
        &s,
        &format!(
            "  data-volume: {{kind: ebs, volume_id: {vol}, region: us-east-1, endpoint: ENDPOINT, wait_timeout: 1m}}\n"
        ),
    );
    let created = agent_aws(
        &s,
        &[
            "--json",
            "snapshot",
            "create",
            "--policy",
            &p,
            "--change",
            "CHG-77",
            "--reason",
            "resize filesystem",
        ],
    );
    created.ok();
    let snap = created.json()["members"][0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let emulated = aws(&s, &["snapshot", &snap]);
    assert_eq!(emulated["volume_id"], vol.as_str());
    assert_eq!(emulated["state"], "completed");
    assert_eq!(emulated["tags"]["drp:change"], "CHG-77");
    assert_eq!(emulated["tags"]["drp:host"], "web-1");
    assert_eq!(emulated["tags"]["drp:reason"], "resize filesystem");

    let rb = agent_aws(
        &s,
        &[
            "--json", "snapshot", "rollback", "--policy", &p, "--change", "CHG-77", "--yes",
        ],
    );
    rb.ok();
    let detail = rb.json()["results"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let new_vol = detail.split_whitespace().nth(1).unwrap().to_string();
    assert!(new_vol.starts_with("vol-") && new_vol != vol, "{detail}");
    let v = aws(&s, &["volume", &new_vol]);
    assert_eq!(
        v["snapshot_id"],
        snap.as_str(),
        "the new volume comes from the snapshot: {v}"
    );
    assert_eq!(v["tags"]["drp:replaces"], vol.as_str());

    // Expiry deletes the older EBS snapshot through the API.
    let p = aws_policy(
        &s,
        &format!(
            "  data-volume: {{kind: ebs, volume_id: {vol}, region: us-east-1, endpoint: ENDPOINT, wait_timeout: 1m}}\nsnapshot_retention: {{keep_last: 1}}\n"
        ),
    );
    agent_aws(
        &s,
        &[
            "snapshot", "create", "--policy", &p, "--change", "CHG-77b", "--reason", "again",
        ],
    )
    .ok();
    agent_aws(&s, &["snapshot", "expire", "--policy", &p]).ok();
    assert_eq!(
        aws(&s, &["snapshot-exists", &snap]),
        false,
        "the expired snapshot is gone from EC2"
    );

    // An API error (an unknown volume) is a clear failure, not a complete set.
    let p2 = aws_policy(
        &s,
        "  data-volume: {kind: ebs, volume_id: vol-00000000deadbeef, region: us-east-1, endpoint: ENDPOINT}\n",
    );
    let bad = agent_aws(
        &s,
        &[
            "snapshot", "create", "--policy", &p2, "--change", "CHG-78", "--reason", "x",
        ],
    );
    bad.code(1);
    assert!(
        bad.stdout.contains("CreateSnapshot failed"),
        "{}",
        bad.stdout
    );
}

#[test]
fn rds_snapshot_and_restore_to_a_new_instance() {
    let s = scratch("rds");
    let name = format!("shop-{}", &s.id[s.id.len() - 8..]);
    aws(&s, &["create-db", &name]);
    let p = aws_policy(
        &s,
        &format!(
            "  shop-db: {{kind: rds, instance: {name}, region: us-east-1, endpoint: ENDPOINT, wait_timeout: 2m}}\n"
        ),
    );
    let created = agent_aws(
        &s,
        &[
            "--json",
            "snapshot",
            "create",
            "--policy",
            &p,
            "--change",
            "MIG-12",
            "--reason",
            "schema migration",
        ],
    );
    created.ok();
    assert!(
        created.json()["members"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("drp-shop-")
    );
    let rb = agent_aws(
        &s,
        &[
            "snapshot", "rollback", "--policy", &p, "--change", "MIG-12", "--yes",
        ],
    );
    rb.ok();
    assert!(
        rb.stdout.contains("switch the application to"),
        "{}",
        rb.stdout
    );
    let dbs = aws(&s, &["dbs"]);
    let restored: Vec<_> = dbs
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.as_str().unwrap().starts_with(&format!("{name}-rb-")))
        .collect();
    assert_eq!(restored.len(), 1, "{dbs}");
}

#[test]
fn drill_change_rollback_through_its_snapshot() {
    let mut s = scratch("drill_change");
    s.shop_env();
    s.set_env("DRILL_CHANGE", &format!("deploy-{}", s.id));
    std::fs::create_dir_all(s.path("uploads")).unwrap();
    std::fs::write(s.path("uploads/index.html"), "<h1>shop</h1>").unwrap();
    let rb =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks/change-rollback.yaml");
    let r = s.drp(&["--json", "drill", rb.to_str().unwrap(), "--yes"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert!(report["rto"]["measured_seconds"].as_f64().unwrap() < 300.0);
    assert_eq!(
        std::fs::read_to_string(s.path("uploads/index.html")).unwrap(),
        "<h1>shop</h1>"
    );
}

#[test]
fn ebs_rollback_swaps_an_attached_volume_and_refuses_a_running_root_volume() {
    let s = scratch("ebs_attached");
    let inst = aws(&s, &["run-instance"]);
    let instance = inst["instance_id"].as_str().unwrap().to_string();
    let root = inst["root_volume_id"].as_str().unwrap().to_string();
    let data = aws(&s, &["create-volume"])["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    aws(&s, &["attach", &data, &instance, "/dev/sdf"]);
    let p = aws_policy(
        &s,
        &format!(
            "  data: {{kind: ebs, volume_id: {data}, region: us-east-1, endpoint: ENDPOINT, wait_timeout: 1m}}\n  root: {{kind: ebs, volume_id: {root}, region: us-east-1, endpoint: ENDPOINT, wait_timeout: 1m}}\n"
        ),
    );
    agent_aws(
        &s,
        &[
            "snapshot",
            "create",
            "--policy",
            &p,
            "--change",
            "OS-9",
            "--reason",
            "os upgrade",
        ],
    )
    .ok();
    let rb = agent_aws(
        &s,
        &[
            "--json", "snapshot", "rollback", "--policy", &p, "--change", "OS-9", "--yes",
        ],
    );
    rb.code(1);
    let results = rb.json()["results"].as_array().unwrap().clone();
    let data_r = results.iter().find(|r| r["snapshot"] == "data").unwrap();
    let root_r = results.iter().find(|r| r["snapshot"] == "root").unwrap();
    // The root volume of a running instance is refused, and says what to do.
    assert_eq!(root_r["ok"], false);
    assert!(
        root_r["detail"]
            .as_str()
            .unwrap()
            .contains("stop the instance"),
        "{root_r}"
    );
    // The data volume is swapped: the new one at the same device, the old one detached and kept.
    assert_eq!(data_r["ok"], true, "{data_r}");
    let new_vol = data_r["detail"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let new_att = aws(&s, &["attachment", &new_vol]);
    assert_eq!(new_att["instance_id"], instance.as_str());
    assert_eq!(new_att["device"], "/dev/sdf");
    assert_eq!(aws(&s, &["attachment", &data])["state"], "available");
}
