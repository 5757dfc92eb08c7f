use super::*;

fn run(dump: &str, source: Option<&str>, dest: &str) -> Result<String, String> {
    Filter::new(source, Some(dest))
        .run(dump.as_bytes(), Vec::new())
        .unwrap()
        .map(|w| String::from_utf8(w).unwrap())
}

/// Decodes the prepared statements back, to read what the server gets.
fn shown(loaded: &str) -> String {
    let mut text = String::new();
    let mut rest = loaded;
    while let Some(at) = rest.find("EXECUTE IMMEDIATE CONVERT(X'") {
        text += &rest[..at];
        let hex_start = at + "EXECUTE IMMEDIATE CONVERT(X'".len();
        let hex_end = hex_start + rest[hex_start..].find('\'').unwrap();
        text += &String::from_utf8(hex::decode(&rest[hex_start..hex_end]).unwrap()).unwrap();
        rest = &rest[hex_end + " USING utf8mb4)".len() + 1..];
    }
    text + rest
}

/// The shapes mariadb-dump 10.11 writes, with qualified names as a user
/// writes them in a trigger, routines and an event.
const DUMP: &str = r#"/*M!999999\- enable the sandbox mode */ 
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: shop
-- ------------------------------------------------------
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
DROP SEQUENCE IF EXISTS `s`;
CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;
DO SETVAL(`s`, 1100, 0);
DROP TABLE IF EXISTS `orders`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `orders` (
  `id` int(11) NOT NULL DEFAULT nextval(`shop`.`s`),
  `名前` varchar(50) DEFAULT NULL,
  `j` longtext CHECK (json_valid(`j`)),
  PRIMARY KEY (`id`),
  CONSTRAINT `fk` FOREIGN KEY (`id`) REFERENCES `other`.`ref` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
/*!40101 SET character_set_client = @saved_cs_client */;
LOCK TABLES `orders` WRITE;
/*!40000 ALTER TABLE `orders` DISABLE KEYS */;
INSERT INTO `orders` VALUES
(1,'ünï shop.orders; drop database shop',NULL),(2,'{\"a\":\"x.y\"}',_binary 'x'),(3,0x62696E,-12.50);
/*!40000 ALTER TABLE `orders` ENABLE KEYS */;
UNLOCK TABLES;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION' */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 trigger shop.t after insert on shop.orders for each row insert into shop.audit(order_id, note) values (new.id, concat('shop.', new.`名前`)) 
*/;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`(in n varchar(50))
begin
  insert into `shop`.orders(`名前`) values (n);
  select count(*) from other.t, x.shop.c;
end ;;
DELIMITER ;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v2` AS select `shop`.`f`(1) AS `n`,`shop`.`id` AS `id` from `shop` */;
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
"#;

#[test]
fn the_exported_databases_qualifications_are_taken_out_and_code_is_one_statement_each() {
    let loaded = run(DUMP, Some("shop"), "shop").unwrap();
    let seen = shown(&loaded);
    assert!(
        seen.contains("trigger t after insert on orders for each row insert into audit(order_id"),
        "{seen}"
    );
    assert!(seen.contains("concat('shop.', new.`名前`)"), "{seen}");
    assert!(seen.contains("insert into orders(`名前`)"), "{seen}");
    assert!(seen.contains("from other.t, x.shop.c"), "{seen}");
    assert!(
        seen.contains("select `f`(1) AS `n`,`id` AS `id` from `shop`"),
        "{seen}"
    );
    assert!(seen.contains("DEFAULT nextval(`s`)"), "{seen}");
    assert!(seen.contains("REFERENCES `other`.`ref`"), "{seen}");
    // Data is left exactly as it was; the table locks are left out.
    assert!(loaded.contains("(1,'ünï shop.orders; drop database shop',NULL)"));
    assert!(
        !loaded.contains("LOCK TABLES")
            && loaded.contains("/*!40000 ALTER TABLE `orders` DISABLE KEYS */;")
    );
    assert_eq!(loaded.matches("EXECUTE IMMEDIATE").count(), 3);
    // Restored under another name, the same holds.
    assert!(
        shown(&run(DUMP, Some("shop"), "shop_copy").unwrap())
            .contains("trigger t after insert on orders")
    );
}

#[test]
fn a_dump_naming_a_database_it_does_not_say_it_was_taken_from_is_refused() {
    let e = run(DUMP, None, "shop_copy").unwrap_err();
    assert!(e.contains("another database"), "{e}");
    let e = run(DUMP, Some("shop"), "shop").map(|_| ()).and(run(
        "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON `t` FOR EACH ROW INSERT INTO shop_copy.t VALUES (1);;\n",
        Some("shop"),
        "shop_copy",
    ));
    assert!(e.unwrap_err().contains("`shop_copy` itself"));
}

#[test]
fn statements_acting_outside_the_restored_database_are_refused() {
    let head = "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n";
    for (bad, says) in [
        ("DROP DATABASE shop;", "does not hold"),
        ("drop table other.t;", "another database"),
        ("drop table shop_copy.t;", "`shop_copy` itself"),
        ("create user x;", "does not hold"),
        ("GRANT ALL ON *.* TO x;", "does not hold"),
        ("use other;", "does not hold"),
        ("SET GLOBAL event_scheduler = ON;", "beyond"),
        ("SET @@global.read_only = 1;", "whole server"),
        ("SET NAMES gbk;", "character set"),
        ("SET @x = (select 1);", "beyond"),
        (
            "INSERT INTO `t` VALUES (load_file('/etc/shadow'));",
            "plain values",
        ),
        ("INSERT INTO `t` SELECT * FROM mysql.user;", "plain values"),
        ("INSERT INTO `t` VALUES ((select 1));", "plain values"),
        ("INSERT INTO `t` VALUES (@@datadir);", "plain values"),
        (
            "CREATE TABLE `t` (a int) ENGINE=CONNECT TABLE_TYPE=DOS FILE_NAME='/etc/passwd';",
            "beyond",
        ),
        ("CREATE TABLE `t` AS SELECT 1;", "beyond"),
        (
            "DELIMITER ;;\nCREATE TRIGGER other.t BEFORE INSERT ON `t` FOR EACH ROW SET @a = 1;;",
            "another database",
        ),
        (
            "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON other.t FOR EACH ROW SET @a = 1;;",
            "another database",
        ),
        (
            "DELIMITER ;;\nSET @a = 1; DROP DATABASE x;;",
            "two statements",
        ),
        ("SET @a = 1; DROP DATABASE x;", "does not hold"),
        ("LOCK TABLES `t` WRITE\\u other\n;", "client command"),
        ("LOCK TABLES other.t WRITE;", "another database"),
        ("select 1;", "does not hold"),
    ] {
        let e = run(&format!("{head}{bad}\n"), Some("shop"), "shop_copy").unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn in_a_view_a_table_named_like_its_database_is_a_table() {
    let dump = "/*!40101 SET SQL_MODE='' */;\nCREATE TABLE `shop` (`id` int, `branch` text);\nCREATE TABLE `c` (`id` int);\n\
                /*!50001 CREATE VIEW `v` AS select `shop`.`branch` AS `branch`, `shop`.`c`.`id` AS `id` \
                from (`shop` join `shop`.`c` on(`c`.`id` = `shop`.`id`)) */;\n";
    let seen = shown(&run(dump, Some("shop"), "shop_copy").unwrap());
    assert!(
        seen.contains("select `shop`.`branch` AS `branch`, `c`.`id` AS `id` from (`shop` join `c` on(`c`.`id` = `shop`.`id`))"),
        "{seen}"
    );
    // Where it would act, a table's name is no database.
    let e = run(
        "CREATE TABLE `mysql` (`id` int);\nINSERT INTO mysql.user VALUES (1);\n",
        Some("shop"),
        "shop",
    );
    assert!(e.unwrap_err().contains("another database"));
}

#[test]
fn code_with_a_statement_after_its_body_reaches_the_server_as_one_statement() {
    let dump = "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON `t` FOR EACH ROW SET @a = 1; DROP DATABASE x;;\n";
    let loaded = run(dump, Some("shop"), "shop").unwrap();
    assert!(!loaded.contains("DROP"), "{loaded}");
    assert_eq!(loaded.matches("EXECUTE IMMEDIATE").count(), 1);
}

#[test]
fn backslashes_in_quotes_need_a_known_sql_mode() {
    let row = "INSERT INTO `t` VALUES ('a\\'b');\n";
    assert!(run(row, Some("shop"), "shop").is_err());
    let known = format!("/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n{row}");
    assert!(run(&known, Some("shop"), "shop").is_ok());
    let ansi = format!(
        "/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\nSET sql_mode = 'NO_BACKSLASH_ESCAPES';\n{row}"
    );
    assert!(run(&ansi, Some("shop"), "shop").is_err());
    let saved = "/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n\
                 /*!50003 SET sql_mode = 'NO_BACKSLASH_ESCAPES' */ ;\n";
    assert!(run(&format!("{saved}{row}"), Some("shop"), "shop").is_err());
    let restored = format!("{saved}/*!50003 SET sql_mode = @saved_sql_mode */ ;\n{row}");
    assert!(run(&restored, Some("shop"), "shop").is_ok());
    // A mode saved before it was known stays unknown.
    let unknown = format!(
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n{row}"
    );
    assert!(run(&unknown, Some("shop"), "shop").is_err());
}

#[test]
fn a_bare_dump_names_its_database_and_a_framed_point_its_accounts() {
    let mut bare = &b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n--\n-- Host: localhost    Database: shop_1\n-- ---\nSET x=1;"[..];
    let (head, first) = read_head(&mut bare).unwrap();
    assert_eq!(head.database.as_deref(), Some("shop_1"));
    assert!(head.accounts.is_none());
    let mut all = String::new();
    Cursor::new(first)
        .chain(bare)
        .read_to_string(&mut all)
        .unwrap();
    assert!(all.starts_with("/*M!999999") && all.ends_with("SET x=1;"));

    let accounts = "CREATE ROLE IF NOT EXISTS `r`;\n";
    let framed = format!(
        "{FRAMING_NAME}\ndatabase shop\naccounts {}\n{accounts}-- dump",
        accounts.len()
    );
    let mut input = framed.as_bytes();
    let (head, first) = read_head(&mut input).unwrap();
    assert_eq!(head.database.as_deref(), Some("shop"));
    assert_eq!(head.accounts.as_deref(), Some(accounts));
    let mut all = String::new();
    Cursor::new(first)
        .chain(input)
        .read_to_string(&mut all)
        .unwrap();
    assert_eq!(all, "-- dump");

    let mut damaged = &b"drp-my/1\ndatabase ../x\n"[..];
    assert!(read_head(&mut damaged).is_err());
}
