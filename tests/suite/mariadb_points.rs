//! MariaDB points against private servers each test starts: a database
//! whose trigger, view and routines were created with qualified names
//! (`create trigger shop.t … on shop.orders`) restores in place and under
//! another name, and the accounts with a privilege on it travel with the
//! point to a bare server, where the application logs in.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Run, Scratch, scratch};

/// A private MariaDB server: its socket for root, TCP on 127.0.0.1 for the
/// application's account.
struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(s: &Scratch, name: &str) -> Server {
        let dir = s.path(name);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed (tests/services/setup.sh installs MariaDB): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--skip-name-resolve"])
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("log").display()))
            .spawn()
            .expect("mariadbd starts");
        let server = Server {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.try_sql("select 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start: {}",
                std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// SQL as root over the socket, read as a script (DELIMITER works).
    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut c = Command::new("mariadb")
            .args(["--no-defaults", "--batch", "--skip-column-names", "-uroot"])
            .arg("--default-character-set=utf8mb4")
            .arg(format!("--socket={}", self.socket().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mariadb runs");
        c.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[track_caller]
    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
    }

    /// SQL as `user` with `password`, over TCP, in `db`.
    fn login(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let mut c = Command::new("mariadb");
        c.args(["--no-defaults", "--batch", "--skip-column-names"])
            .args(["--protocol=tcp", "-h", "127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg("--default-character-set=utf8mb4");
        if !db.is_empty() {
            c.arg(format!("--database={db}"));
        }
        let out = c
            .env("MYSQL_PWD", password)
            .args(["-e", sql])
            .output()
            .expect("mariadb runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A shop whose trigger, view, procedure and function all name their
/// tables with the database, as many applications' migrations write them;
/// unicode names and data; an audit table the trigger writes.
fn shop(server: &Server, db: &str) {
    server.sql(&format!(
        r#"create database {db} character set utf8mb4;
create table {db}.customers (id int primary key, `名前` varchar(50) not null, city varchar(50));
create table {db}.orders (id int primary key auto_increment, customer int not null, total decimal(10,2), note varchar(100),
  foreign key (customer) references {db}.customers (id));
create table {db}.audit (id int primary key auto_increment, order_id int, note varchar(200));
create table {db}.`売上` (day date primary key, amount decimal(12,2));
insert into {db}.customers values (1, 'ünï', 'Zürich'), (2, '山田', '東京'), (3, 'O''Brien', 'Cork');
insert into {db}.`売上` values ('2026-01-01', 12.50), ('2026-01-02', 99.99);
create trigger {db}.order_audit after insert on {db}.orders for each row
  insert into {db}.audit (order_id, note) values (new.id, concat('new order: ', coalesce(new.note, '-')));
insert into {db}.orders (customer, total, note) values (1, 10.50, 'first'), (2, 20, 'quote '' and \\ backslash'),
  (3, 30, 'shop.orders named in text; drop database {db}');
create view {db}.order_view as select o.id, c.`名前` as name, o.total from {db}.orders o join {db}.customers c on c.id = o.customer;
create table {db}.{db} (id int primary key, branch varchar(20));
insert into {db}.{db} values (1, 'Altstadt'), (2, '新宿');
create view {db}.branches as select {db}.{db}.branch, c.city from {db}.{db} join {db}.customers c on c.id = {db}.{db}.id;
create sequence {db}.invoice_numbers start with 1000;
create table {db}.invoices (no int primary key default nextval({db}.invoice_numbers), order_id int);
insert into {db}.invoices (order_id) values (1), (2);
create function {db}.order_total(who int) returns decimal(12,2) reads sql data
  return (select coalesce(sum(total), 0) from {db}.orders where customer = who);
DELIMITER //
create procedure {db}.add_order(in who int, in amount decimal(10,2))
begin
  insert into {db}.orders (customer, total, note) values (who, amount, 'by procedure');
  if amount > 100 then
    insert into {db}.audit (order_id, note) values (last_insert_id(), 'large');
  end if;
end //
DELIMITER ;
"#
    ));
}

/// Row counts and digests of every table of `db`, in key order.
fn digest(server: &Server, db: &str) -> String {
    server.sql(&format!(
        "select count(*), md5(group_concat(concat_ws(',', id, `名前`, city) order by id)) from {db}.customers; \
         select count(*), md5(group_concat(concat_ws(',', id, customer, total, note) order by id)) from {db}.orders; \
         select count(*), md5(group_concat(concat_ws(',', id, order_id, note) order by id)) from {db}.audit; \
         select count(*), md5(group_concat(concat_ws(',', day, amount) order by day)) from {db}.`売上`; \
         select group_concat(concat_ws(',', no, order_id) order by no) from {db}.invoices; \
         select group_concat(concat_ws(',', branch, city) order by branch) from {db}.branches;"
    ))
}

fn policy(s: &Scratch, file: &str, server: &Server, passwords: bool) -> String {
    s.write(
        file,
        &format!(
            "host: db1\nstate_dir: state\ntargets:\n  nas: {{kind: local, path: nas}}\n\
             exports:\n  shop:\n    source:\n      kind: mariadb\n      socket: {}\n      user: root\n      \
             database: shop\n      include_account_passwords: {passwords}\n    targets: [nas]\n",
            server.socket().display()
        ),
    );
    file.to_string()
}

fn restore(s: &Scratch, policy: &str, extra: &[&str]) -> Run {
    let mut args = vec!["restore", "--policy", policy, "--export", "shop", "--yes"];
    args.extend_from_slice(extra);
    s.agent(&args)
}

/// The trigger, procedure, function and view of `db` work, and act on
/// `db` only: returns the audit rows they wrote there.
fn code_works(server: &Server, db: &str) -> String {
    server.sql(&format!(
        "insert into {db}.orders (customer, total, note) values (3, 7, 'after restore'); \
         call {db}.add_order(2, 150);"
    ));
    assert_eq!(server.sql(&format!("select {db}.order_total(2)")), "170.00");
    assert_eq!(
        server.sql(&format!("select name from {db}.order_view where id = 2")),
        "山田"
    );
    // The table's default draws from the sequence beside it.
    assert_eq!(
        server.sql(&format!(
            "insert into {db}.invoices (order_id) values (4); \
             select max(no) = previous value for {db}.invoice_numbers and max(no) > 1001 from {db}.invoices"
        )),
        "1"
    );
    server.sql(&format!(
        "select note from {db}.audit where id > 3 order by id"
    ))
}

#[test]
fn a_database_with_qualified_trigger_view_and_routines_restores_in_place_and_under_another_name() {
    let s = scratch("my_qualified");
    let server = Server::start(&s, "my");
    shop(&server, "shop");
    let p = policy(&s, "policy.yaml", &server, false);
    let before = digest(&server, "shop");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    server.sql("insert into shop.orders (customer, total) values (1, 1); update shop.customers set city = 'Basel' where id = 1;");

    // In place, over the live database.
    let r = restore(&s, &p, &[]);
    r.ok();
    assert_eq!(digest(&server, "shop"), before, "{}", r.all());
    assert_eq!(
        code_works(&server, "shop"),
        "new order: after restore\nnew order: by procedure\nlarge"
    );
    let definitions = server.sql(
        "select action_statement from information_schema.triggers where trigger_schema = 'shop'; \
         select routine_definition from information_schema.routines where routine_schema = 'shop';",
    );
    assert!(!definitions.contains("shop."), "{definitions}");

    // Under another name, beside the live one: the copy's code acts on the copy.
    let live = digest(&server, "shop");
    let r = restore(&s, &p, &["--to", "shop_copy"]);
    r.ok();
    assert_eq!(digest(&server, "shop_copy"), before, "{}", r.all());
    assert_eq!(
        code_works(&server, "shop_copy"),
        "new order: after restore\nnew order: by procedure\nlarge"
    );
    assert_eq!(
        digest(&server, "shop"),
        live,
        "the copy's trigger wrote into the live database"
    );
}

#[test]
fn a_database_with_a_qualified_trigger_and_an_application_account_restores_onto_a_bare_server_and_the_account_logs_in()
 {
    let s = scratch("my_accounts");
    let source = Server::start(&s, "source");
    shop(&source, "shop");
    source.sql(
        "create user 'shop_app'@'127.0.0.1' identified by 'S3cret-app-pw'; \
         grant select, insert, update, delete, execute on shop.* to 'shop_app'@'127.0.0.1'; \
         grant process on *.* to 'shop_app'@'127.0.0.1'; \
         create role reporting; grant select on shop.order_view to reporting; \
         create user 'report'@'%' identified by 'R3port-pw'; grant reporting to 'report'@'%'; \
         set default role reporting for 'report'@'%'; \
         grant execute on procedure shop.add_order to 'report'@'%'; \
         create user 'elsewhere'@'%' identified by 'x'; grant all on mysql.* to 'elsewhere'@'%';",
    );
    let hash = source.sql("select authentication_string from mysql.user where user = 'shop_app'");
    let p = policy(&s, "source.yaml", &source, true);
    let before = digest(&source, "shop");
    let backup = s.agent(&["backup", "--policy", &p]);
    backup.ok();
    assert!(!backup.all().contains(&hash));

    // A standby with nothing on it.
    let bare = Server::start(&s, "bare");
    let on_bare = policy(&s, "standby.yaml", &bare, true);
    let r = restore(&s, &on_bare, &[]);
    r.ok();
    assert!(
        !r.all().contains(&hash),
        "a password hash was shown: {}",
        r.all()
    );
    assert!(r.stderr.contains("'shop_app'@'127.0.0.1'"), "{}", r.stderr);
    assert_eq!(digest(&bare, "shop"), before);

    // The application logs in with its own password, reads, writes, and its
    // insert fires the trigger into the restored database.
    let app = |sql: &str| bare.login("shop_app", "S3cret-app-pw", "shop", sql);
    assert_eq!(app("select count(*) from orders").unwrap(), "3");
    app("insert into orders (customer, total, note) values (1, 5, 'from the app')").unwrap();
    assert_eq!(
        app("select note from audit order by id desc limit 1").unwrap(),
        "new order: from the app"
    );
    app("call add_order(1, 2)").unwrap();
    assert_eq!(app("select order_total(1)").unwrap(), "17.50");
    // What it had on the server as a whole, or on another database, did not travel.
    assert!(app("select count(*) from mysql.user").is_err());
    assert!(
        !bare
            .sql("show grants for 'shop_app'@'127.0.0.1'")
            .contains("PROCESS")
    );
    assert_eq!(
        bare.sql("select count(*) from mysql.user where user = 'elsewhere'"),
        "0"
    );
    // The reporting account comes with its role, default role and password.
    assert_eq!(
        bare.login(
            "report",
            "R3port-pw",
            "shop",
            "select name from order_view where id = 1"
        )
        .unwrap(),
        "ünï"
    );
    assert!(
        bare.login("report", "R3port-pw", "shop", "select count(*) from orders")
            .is_err()
    );
    bare.login("report", "R3port-pw", "shop", "call add_order(3, 1)")
        .unwrap();

    // Restored again over itself, every account keeps what it had: the
    // routines are recreated, and their grants with them.
    restore(&s, &on_bare, &[]).ok();
    assert_eq!(digest(&bare, "shop"), before);
    bare.login("report", "R3port-pw", "shop", "call add_order(3, 1)")
        .unwrap();
    assert_eq!(app("select order_total(3)").unwrap(), "31.00");
}

#[test]
fn without_their_passwords_accounts_are_created_locked_and_named_and_existing_ones_are_left_alone()
{
    let s = scratch("my_locked");
    let source = Server::start(&s, "source");
    shop(&source, "shop");
    source.sql(
        "create user 'shop_app'@'127.0.0.1' identified by 'S3cret-app-pw'; \
         grant select, insert on shop.* to 'shop_app'@'127.0.0.1'; \
         grant update (note) on shop.orders to 'shop_app'@'127.0.0.1'; \
         create user 'ops'@'127.0.0.1' identified by 'source-ops-pw'; \
         grant all on shop.* to 'ops'@'127.0.0.1';",
    );
    let p = policy(&s, "source.yaml", &source, false);
    s.agent(&["-q", "backup", "--policy", &p]).ok();

    // The standby already has `ops`, with its own password and no grants.
    let bare = Server::start(&s, "bare");
    bare.sql("create user 'ops'@'127.0.0.1' identified by 'standby-ops-pw'");
    let on_bare = policy(&s, "standby.yaml", &bare, false);
    let r = restore(&s, &on_bare, &["--to", "shop_new"]);
    r.ok();
    assert!(
        r.stderr.contains("need a password") && r.stderr.contains("'shop_app'@'127.0.0.1'"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("given on `shop_new`"),
        "the output says the grants follow the new name: {}",
        r.stderr
    );
    let app = |sql: &str| bare.login("shop_app", "S3cret-app-pw", "shop_new", sql);
    assert!(app("select 1").is_err(), "created without its password");
    bare.sql("alter user 'shop_app'@'127.0.0.1' identified by 'new-pw' account unlock");
    let app = |sql: &str| bare.login("shop_app", "new-pw", "shop_new", sql);
    assert_eq!(app("select count(*) from orders").unwrap(), "3");
    app("insert into orders (customer, total) values (2, 1)").unwrap();
    app("update orders set note = 'changed' where id = 1").unwrap();
    assert!(app("update orders set total = 0 where id = 1").is_err());
    assert_eq!(
        app("select note from audit order by id desc limit 1").unwrap(),
        "new order: -"
    );

    // The existing account kept its password and got nothing.
    assert!(bare.login("ops", "standby-ops-pw", "", "select 1").is_ok());
    assert!(bare.login("ops", "source-ops-pw", "", "select 1").is_err());
    assert!(
        bare.login("ops", "standby-ops-pw", "shop_new", "select 1")
            .is_err()
    );
}
