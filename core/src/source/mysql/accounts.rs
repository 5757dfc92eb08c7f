//! The accounts a MariaDB point carries: every account and role with a
//! privilege on the exported database, as statements drp writes itself and
//! reads back strictly.
//!
//! A point carries, one per line:
//!
//! ```text
//! CREATE ROLE IF NOT EXISTS `reader`;
//! CREATE USER IF NOT EXISTS `shop_app`@`%` IDENTIFIED VIA mysql_native_password USING '*…';
//! CREATE USER IF NOT EXISTS `report`@`%` ACCOUNT LOCK;
//! GRANT SELECT, INSERT ON `shop`.* TO `shop_app`@`%`;
//! GRANT SELECT (`name`) ON `shop`.`orders` TO `report`@`%`;
//! GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `shop_app`@`%`;
//! GRANT `reader` TO `report`@`%`;
//! SET DEFAULT ROLE `reader` FOR `report`@`%`;
//! ```
//!
//! Authentication (password hashes) only when the source says
//! `include_account_passwords: true`; otherwise an account is created
//! locked, to be given a password. Reading them back, anything else —
//! another database, the whole server, an account altered or dropped — is
//! refused, and a restore creates only the accounts the server lacks: an
//! existing account is never changed, and is given no grant.
//!
//! One file, over 600 lines with its tests: the strict reader must accept
//! exactly what the writer writes, so the two are read side by side.

use std::collections::BTreeSet;

use super::sql::{Quoting, Tok, Token, quote_name, quote_text, tokens};

/// An account (`user@host`) or a role (no host).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Account {
    pub user: String,
    pub host: Option<String>,
}

impl Account {
    pub fn sql(&self) -> String {
        match &self.host {
            Some(h) => format!("{}@{}", quote_name(&self.user), quote_name(h)),
            None => quote_name(&self.user),
        }
    }

    /// As a person reads it.
    pub fn shown(&self) -> String {
        match &self.host {
            Some(h) => format!("'{}'@'{}'", self.user, h),
            None => format!("role '{}'", self.user),
        }
    }
}

/// What a grant is on, in the exported database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `db.*`
    Database,
    /// `db.table`
    Table(String),
    /// `PROCEDURE db.p` or `FUNCTION db.f`
    Routine { function: bool, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    CreateUser {
        account: Account,
        /// Each method: plugin, and its secret (`USING '…'`).
        auth: Vec<(String, Option<String>)>,
        locked: bool,
    },
    CreateRole(String),
    Grant {
        /// Each privilege, with its columns.
        privileges: Vec<(String, Vec<String>)>,
        on: Object,
        to: Account,
        grant_option: bool,
    },
    GrantRole {
        role: String,
        to: Account,
        admin: bool,
    },
    DefaultRole {
        role: String,
        to: Account,
    },
}

/// The privileges a grant on one database may hold.
const PRIVILEGES: [&str; 20] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EVENT",
    "TRIGGER",
    "DELETE HISTORY",
    "ALL PRIVILEGES",
];

/// `db` as a database-level grant names it exactly (`_` and `%` are
/// wildcards there).
fn escaped(db: &str) -> String {
    db.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}

impl Statement {
    /// The statement, on database `db`.
    pub fn sql(&self, db: &str) -> String {
        match self {
            Statement::CreateUser {
                account,
                auth,
                locked,
            } => {
                let mut s = format!("CREATE USER IF NOT EXISTS {}", account.sql());
                for (i, (plugin, secret)) in auth.iter().enumerate() {
                    s += if i == 0 { " IDENTIFIED VIA " } else { " OR " };
                    s += plugin;
                    if let Some(secret) = secret {
                        s += &format!(" USING {}", quote_text(secret));
                    }
                }
                if *locked {
                    s += " ACCOUNT LOCK";
                }
                s
            }
            Statement::CreateRole(role) => {
                format!("CREATE ROLE IF NOT EXISTS {}", quote_name(role))
            }
            Statement::Grant {
                privileges,
                on,
                to,
                grant_option,
            } => {
                let privs: Vec<String> = privileges
                    .iter()
                    .map(|(p, cols)| match cols.is_empty() {
                        true => p.clone(),
                        false => format!(
                            "{p} ({})",
                            cols.iter()
                                .map(|c| quote_name(c))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                    .collect();
                let on = match on {
                    Object::Database => format!("{}.*", quote_name(&escaped(db))),
                    Object::Table(t) => format!("{}.{}", quote_name(db), quote_name(t)),
                    Object::Routine { function, name } => format!(
                        "{} {}.{}",
                        if *function { "FUNCTION" } else { "PROCEDURE" },
                        quote_name(db),
                        quote_name(name)
                    ),
                };
                format!(
                    "GRANT {} ON {on} TO {}{}",
                    privs.join(", "),
                    to.sql(),
                    if *grant_option {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                )
            }
            Statement::GrantRole { role, to, admin } => format!(
                "GRANT {} TO {}{}",
                quote_name(role),
                to.sql(),
                if *admin { " WITH ADMIN OPTION" } else { "" }
            ),
            Statement::DefaultRole { role, to } => {
                format!("SET DEFAULT ROLE {} FOR {}", quote_name(role), to.sql())
            }
        }
    }

    /// The account or role it creates, if it creates one.
    pub fn creates(&self) -> Option<Account> {
        match self {
            Statement::CreateUser { account, .. } => Some(account.clone()),
            Statement::CreateRole(role) => Some(Account {
                user: role.clone(),
                host: None,
            }),
            _ => None,
        }
    }
}

/// Reads statements one token at a time.
struct Words<'a> {
    toks: &'a [Token],
    at: usize,
}

impl<'a> Words<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.at).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.peek();
        self.at += 1;
        t
    }

    fn word(&mut self, w: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_word(w)) {
            self.at += 1;
            return true;
        }
        false
    }

    fn words(&mut self, ws: &[&str]) -> bool {
        let at = self.at;
        if ws.iter().all(|w| self.word(w)) {
            return true;
        }
        self.at = at;
        false
    }

    fn punct(&mut self, p: u8) -> bool {
        if self.peek() == Some(&Tok::Punct(p)) {
            self.at += 1;
            return true;
        }
        false
    }

    fn done(&self) -> bool {
        self.at >= self.toks.len()
    }

    /// A name: quoted, or a bare word.
    fn name(&mut self) -> Option<String> {
        match self.peek()? {
            Tok::Ident(t) | Tok::SQuote(t) | Tok::DQuote(t) | Tok::Word(t) => {
                let s = t.as_str()?.to_string();
                self.at += 1;
                Some(s)
            }
            _ => None,
        }
    }

    fn account(&mut self) -> Option<Account> {
        let user = self.name()?;
        if self.punct(b'@') {
            let host = self.name()?;
            return Some(Account {
                user,
                host: Some(host),
            });
        }
        Some(Account { user, host: None })
    }

    fn user(&mut self) -> Option<Account> {
        self.account().filter(|a| a.host.is_some())
    }

    fn role(&mut self) -> Option<String> {
        self.account().filter(|a| a.host.is_none()).map(|a| a.user)
    }
}

/// One statement as the point (or `SHOW GRANTS`) writes it, on database
/// `db`; `None` for any other shape.
fn parse(toks: &[Token], db: &str) -> Option<Statement> {
    let mut w = Words { toks, at: 0 };
    let s = if w.words(&["create", "user", "if", "not", "exists"]) {
        let account = w.user()?;
        let mut auth = Vec::new();
        if w.words(&["identified", "via"]) {
            loop {
                let plugin = match w.next()? {
                    Tok::Word(t) => t.as_str()?.to_string(),
                    _ => return None,
                };
                if !plugin
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return None;
                }
                let secret = match w.word("using") {
                    true => match w.next()? {
                        Tok::SQuote(t) => Some(t.as_str()?.to_string()),
                        _ => return None,
                    },
                    false => None,
                };
                auth.push((plugin, secret));
                if !w.word("or") {
                    break;
                }
            }
        }
        let locked = w.words(&["account", "lock"]);
        Statement::CreateUser {
            account,
            auth,
            locked,
        }
    } else if w.words(&["create", "role", "if", "not", "exists"]) {
        Statement::CreateRole(w.role()?)
    } else if w.words(&["set", "default", "role"]) {
        let role = w.role()?;
        if !w.word("for") {
            return None;
        }
        Statement::DefaultRole {
            role,
            to: w.user()?,
        }
    } else if w.word("grant") {
        let at = w.at;
        if let (Some(role), true) = (w.role(), w.word("to")) {
            let to = w.account()?;
            let admin = w.words(&["with", "admin", "option"]);
            Statement::GrantRole { role, to, admin }
        } else {
            w.at = at;
            grant(&mut w, db)?
        }
    } else {
        return None;
    };
    w.done().then_some(s)
}

/// `GRANT privileges ON [PROCEDURE|FUNCTION] db.object TO account
/// [WITH GRANT OPTION]`, the database being `db`.
fn grant(w: &mut Words, db: &str) -> Option<Statement> {
    let mut privileges = Vec::new();
    loop {
        let mut words = Vec::new();
        while let Some(Tok::Word(t)) = w.peek() {
            if t.is_word("on") {
                break;
            }
            words.push(t.as_str()?.to_ascii_uppercase());
            w.at += 1;
        }
        let name = words.join(" ");
        if !PRIVILEGES.contains(&name.as_str()) {
            return None;
        }
        let mut columns = Vec::new();
        if w.punct(b'(') {
            if !["SELECT", "INSERT", "UPDATE", "REFERENCES"].contains(&name.as_str()) {
                return None;
            }
            loop {
                columns.push(w.name()?);
                if w.punct(b')') {
                    break;
                }
                if !w.punct(b',') {
                    return None;
                }
            }
        }
        privileges.push((name, columns));
        if !w.punct(b',') {
            break;
        }
    }
    if !w.word("on") {
        return None;
    }
    let routine = if w.word("procedure") {
        Some(false)
    } else if w.word("function") {
        Some(true)
    } else {
        None
    };
    let database = w.name()?;
    if database != db && database != escaped(db) || !w.punct(b'.') {
        return None;
    }
    let on = match (routine, w.punct(b'*')) {
        (None, true) => Object::Database,
        (Some(function), false) => Object::Routine {
            function,
            name: w.name()?,
        },
        (None, false) => Object::Table(w.name()?),
        (Some(_), true) => return None,
    };
    if !w.word("to") {
        return None;
    }
    let to = w.account()?;
    let grant_option = w.words(&["with", "grant", "option"]);
    Some(Statement::Grant {
        privileges,
        on,
        to,
        grant_option,
    })
}

/// Splits `text` into statements (token lists).
fn statements(text: &str) -> Result<Vec<Vec<Token>>, String> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    for t in tokens(text, Quoting::of_mode(""))? {
        match t.tok {
            Tok::End => all.push(std::mem::take(&mut current)),
            Tok::Delimiter(_) => return Err("a DELIMITER command".into()),
            _ => current.push(t),
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    Ok(all)
}

/// A statement's first words, never its strings (they may be secrets).
fn head(toks: &[Token]) -> String {
    toks.iter()
        .take(6)
        .map(|t| match &t.tok {
            Tok::Word(x) | Tok::Ident(x) => String::from_utf8_lossy(&x.bytes).into_owned(),
            Tok::Punct(p) => char::from(*p).to_string(),
            _ => "…".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a point's account statements (exported from database `db`).
/// Anything that is not one of the shapes above refuses the whole set.
pub fn read(text: &str, db: &str) -> Result<Vec<Statement>, String> {
    let refused = |why: &str| {
        format!(
            "the point's accounts hold {why}: drp creates accounts and grants on the restored database only, so nothing was changed"
        )
    };
    statements(text)
        .map_err(|e| refused(&format!("text drp cannot read ({e})")))?
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse(s, db)
                .ok_or_else(|| refused(&format!("a statement drp does not run (`{} …`)", head(s))))
        })
        .collect()
}

/// Writes account statements as a point carries them.
pub fn write(all: &[Statement], db: &str) -> String {
    all.iter().map(|s| format!("{};\n", s.sql(db))).collect()
}

/// Several accounts' statements in the order a restore runs them (roles,
/// accounts, grants, role grants, default roles), each once; a role is
/// granted only when it is carried itself.
pub fn carried(all: Vec<Statement>) -> Vec<Statement> {
    let roles: BTreeSet<String> = all
        .iter()
        .filter_map(|s| match s {
            Statement::CreateRole(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let rank = |s: &Statement| match s {
        Statement::CreateRole(_) => 0,
        Statement::CreateUser { .. } => 1,
        Statement::Grant { .. } => 2,
        Statement::GrantRole { .. } => 3,
        Statement::DefaultRole { .. } => 4,
    };
    let mut seen = BTreeSet::new();
    let mut kept: Vec<Statement> = all
        .into_iter()
        .filter(|s| match s {
            Statement::GrantRole { role, .. } | Statement::DefaultRole { role, .. } => {
                roles.contains(role)
            }
            _ => true,
        })
        .filter(|s| seen.insert(s.sql("")))
        .collect();
    kept.sort_by_key(rank);
    kept
}

/// The grants and authentication of one account, from `SHOW CREATE USER`
/// and `SHOW GRANTS` (`create` is `None` for a role).
pub fn from_server(
    account: &Account,
    create: Option<&str>,
    grants: &[&str],
    db: &str,
    with_passwords: bool,
) -> Vec<Statement> {
    let mut out = Vec::new();
    match (&account.host, create) {
        (None, _) => out.push(Statement::CreateRole(account.user.clone())),
        (Some(_), Some(create)) => {
            let (auth, locked) = authentication(create);
            let (auth, locked) = match with_passwords {
                true => (auth, locked),
                false => (Vec::new(), true),
            };
            out.push(Statement::CreateUser {
                account: account.clone(),
                auth,
                locked,
            });
        }
        (Some(_), None) => {}
    }
    for line in grants {
        let Ok(all) = statements(line) else {
            continue;
        };
        for s in all {
            match parse(&s, db) {
                Some(st @ Statement::Grant { .. })
                | Some(st @ Statement::GrantRole { .. })
                | Some(st @ Statement::DefaultRole { .. }) => out.push(st),
                // Server-wide privileges (and anything else) are not carried.
                _ => {}
            }
        }
    }
    out
}

/// The authentication methods and lock of a `SHOW CREATE USER` line.
fn authentication(create: &str) -> (Vec<(String, Option<String>)>, bool) {
    let Ok(toks) = tokens(create, Quoting::of_mode("")) else {
        return (Vec::new(), true);
    };
    let mut w = Words { toks: &toks, at: 0 };
    let mut auth = Vec::new();
    let mut locked = false;
    while !w.done() {
        if w.words(&["identified", "by", "password"]) {
            if let Some(Tok::SQuote(t)) = w.next()
                && let Some(s) = t.as_str()
            {
                auth.push(("mysql_native_password".to_string(), Some(s.to_string())));
            }
        } else if w.words(&["identified", "via"]) || w.word("or") && !auth.is_empty() {
            let Some(Tok::Word(p)) = w.next() else {
                continue;
            };
            let Some(plugin) = p.as_str().map(str::to_string) else {
                continue;
            };
            let secret = match w.word("using") || w.word("as") {
                true => match w.next() {
                    Some(Tok::SQuote(t)) => t.as_str().map(str::to_string),
                    _ => None,
                },
                false => None,
            };
            auth.push((plugin, secret));
        } else if w.words(&["account", "lock"]) {
            locked = true;
        } else {
            w.at += 1;
        }
    }
    // A secret drp would have to quote with a backslash is not carried.
    if auth
        .iter()
        .any(|(_, s)| s.as_deref().is_some_and(|s| s.contains('\\')))
    {
        return (Vec::new(), true);
    }
    (auth, locked)
}

/// What a restore does with a point's accounts on a server having
/// `existing` (accounts; roles with no host).
#[derive(Debug, Default)]
pub struct Plan {
    /// Accounts and roles to create, in order.
    pub create: Vec<Statement>,
    /// Grants on the database and of roles, given before the load.
    pub before: Vec<Statement>,
    /// Grants on tables and routines, given once they exist.
    pub after: Vec<Statement>,
    /// Accounts the point carries that the server has: left as they are.
    pub existing: Vec<Account>,
    /// Accounts created locked, without a password.
    pub need_password: Vec<Account>,
    /// Roles not granted: the server has them, and drp grants only the
    /// roles it creates.
    pub roles_not_granted: Vec<(String, Account)>,
}

pub fn plan(all: &[Statement], existing: &BTreeSet<Account>) -> Plan {
    let mut p = Plan::default();
    let mut created = BTreeSet::new();
    for s in all {
        if let Some(a) = s.creates() {
            if existing.contains(&a) {
                p.existing.push(a);
                continue;
            }
            if let Statement::CreateUser { auth, .. } = s
                && auth.is_empty()
            {
                p.need_password.push(a.clone());
            }
            created.insert(a);
            p.create.push(s.clone());
        }
    }
    let role = |r: &str| Account {
        user: r.to_string(),
        host: None,
    };
    for s in all {
        match s {
            Statement::Grant { to, on, .. } if created.contains(to) => match on {
                Object::Database => p.before.push(s.clone()),
                _ => p.after.push(s.clone()),
            },
            Statement::GrantRole { role: r, to, .. } | Statement::DefaultRole { role: r, to }
                if created.contains(to) =>
            {
                if created.contains(&role(r)) {
                    p.before.push(s.clone());
                } else if matches!(s, Statement::GrantRole { .. }) {
                    p.roles_not_granted.push((r.clone(), to.clone()));
                }
            }
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Account {
        Account {
            user: "shop_app".into(),
            host: Some("127.0.0.1".into()),
        }
    }

    #[test]
    fn what_show_grants_says_on_the_database_is_carried_and_read_back_the_same() {
        let grants = [
            "GRANT PROCESS ON *.* TO `shop_app`@`127.0.0.1` IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3'",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON `shop`.* TO `shop_app`@`127.0.0.1`",
            "GRANT SELECT (`名前`), UPDATE (`total`) ON `shop`.`orders` TO `shop_app`@`127.0.0.1`",
            "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `shop_app`@`127.0.0.1`",
            "GRANT ALL PRIVILEGES ON `other`.* TO `shop_app`@`127.0.0.1`",
            "GRANT `reader` TO `shop_app`@`127.0.0.1`",
            "SET DEFAULT ROLE `reader` FOR `shop_app`@`127.0.0.1`",
        ];
        let create = "CREATE USER `shop_app`@`127.0.0.1` IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3' ACCOUNT LOCK";
        let carried = from_server(&app(), Some(create), &grants, "shop", true);
        assert_eq!(carried.len(), 6, "{carried:?}");
        let text = write(&carried, "shop");
        assert!(text.contains("CREATE USER IF NOT EXISTS `shop_app`@`127.0.0.1` IDENTIFIED VIA mysql_native_password USING '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3' ACCOUNT LOCK;"), "{text}");
        assert!(
            !text.contains("PROCESS") && !text.contains("other"),
            "{text}"
        );
        assert_eq!(read(&text, "shop").unwrap(), carried);
        // Restored under another name, the grants name it.
        let moved = write(&carried, "shop_new");
        assert!(
            moved.contains("ON `shop\\_new`.* TO") && moved.contains("ON `shop_new`.`orders`"),
            "{moved}"
        );

        let without = write(
            &from_server(&app(), Some(create), &grants, "shop", false),
            "shop",
        );
        assert!(without.contains("CREATE USER IF NOT EXISTS `shop_app`@`127.0.0.1` ACCOUNT LOCK;"));
        assert!(!without.contains("*2B60"));
    }

    #[test]
    fn anything_but_accounts_and_grants_on_the_database_is_refused_without_showing_secrets() {
        for bad in [
            "GRANT ALL ON *.* TO `x`@`%`;",
            "GRANT ALL PRIVILEGES ON `other`.* TO `x`@`%`;",
            "GRANT SELECT ON `other`.`t` TO `x`@`%`;",
            "GRANT FILE ON `shop`.* TO `x`@`%`;",
            "GRANT SUPER ON `shop`.* TO `x`@`%`;",
            "GRANT SELECT ON `shop`.* TO `x`@`%` IDENTIFIED BY 'secret-pw';",
            "GRANT PROXY ON `root`@`localhost` TO `x`@`%`;",
            "DROP USER `x`@`%`;",
            "ALTER USER `root`@`localhost` IDENTIFIED BY 'secret-pw';",
            "CREATE USER `x`@`%` IDENTIFIED BY 'secret-pw';",
            "CREATE OR REPLACE USER `x`@`%`;",
            "CREATE USER IF NOT EXISTS `x`@`%` IDENTIFIED VIA mysql_native_password USING 'secret-pw' WITH MAX_QUERIES_PER_HOUR 1;",
            "SET PASSWORD FOR `root`@`localhost` = 'secret-pw';",
            "REVOKE ALL ON `shop`.* FROM `x`@`%`;",
            "DROP DATABASE `shop`;",
            "CREATE USER IF NOT EXISTS `x`@`%`; DROP DATABASE shop;",
            "CREATE USER IF NOT EXISTS `x`@`%`\\! rm -rf /\n;",
        ] {
            let e = read(bad, "shop").unwrap_err();
            assert!(e.contains("nothing was changed"), "{bad}: {e}");
            assert!(!e.contains("secret-pw"), "{e}");
        }
        read(
            "GRANT SELECT ON `shop`.* TO `x`@`%`;\nCREATE ROLE IF NOT EXISTS `r`;\n",
            "shop",
        )
        .unwrap();
    }

    #[test]
    fn only_missing_accounts_are_created_and_only_they_get_grants() {
        let text = "CREATE ROLE IF NOT EXISTS `reader`;\n\
                    CREATE ROLE IF NOT EXISTS `admin`;\n\
                    CREATE USER IF NOT EXISTS `shop_app`@`127.0.0.1` ACCOUNT LOCK;\n\
                    CREATE USER IF NOT EXISTS `ops`@`%` IDENTIFIED VIA mysql_native_password USING '*AB';\n\
                    GRANT SELECT ON `shop`.* TO `reader`;\n\
                    GRANT SELECT ON `shop`.* TO `shop_app`@`127.0.0.1`;\n\
                    GRANT INSERT ON `shop`.`orders` TO `shop_app`@`127.0.0.1`;\n\
                    GRANT ALL PRIVILEGES ON `shop`.* TO `ops`@`%`;\n\
                    GRANT `reader` TO `shop_app`@`127.0.0.1`;\n\
                    GRANT `admin` TO `shop_app`@`127.0.0.1`;\n";
        let all = read(text, "shop").unwrap();
        let existing: BTreeSet<Account> = [
            Account {
                user: "ops".into(),
                host: Some("%".into()),
            },
            Account {
                user: "admin".into(),
                host: None,
            },
        ]
        .into();
        let p = plan(&all, &existing);
        assert_eq!(p.create.len(), 2);
        assert_eq!(p.need_password, vec![app()]);
        assert_eq!(p.existing.len(), 2);
        let before: Vec<String> = p.before.iter().map(|s| s.sql("shop")).collect();
        assert_eq!(
            before,
            [
                "GRANT SELECT ON `shop`.* TO `reader`",
                "GRANT SELECT ON `shop`.* TO `shop_app`@`127.0.0.1`",
                "GRANT `reader` TO `shop_app`@`127.0.0.1`"
            ]
        );
        assert_eq!(p.after.len(), 1);
        assert_eq!(p.roles_not_granted, vec![("admin".to_string(), app())]);
    }
}
