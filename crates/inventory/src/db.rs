//! Users and their inventory items, in SQL (SQLite, PostgreSQL or MySQL/MariaDB through one code path).
//!
//! Queries are written once with `?` placeholders; [`mooring_sql::Dialect::sql`] rewrites them for
//! PostgreSQL. Only the table definitions differ per database (auto-increment keys).

use mooring_sql::Dialect;
use sqlx::{AnyPool, AssertSqlSafe, Row};

/// A database failure. Its text is for logs only.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The URL or setup was refused.
    #[error("database setup failed: {0}")]
    Setup(#[from] mooring_sql::SqlStoreError),
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Sign-in email, unique.
    pub email: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
}

/// One inventory item.
#[derive(Debug, Clone)]
pub struct Item {
    /// Primary key.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Quantity on hand.
    pub quantity: i64,
    /// When it was added (unix ms).
    pub created_at: i64,
}

fn user_from_row(row: sqlx::any::AnyRow) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        password_hash: row.get(2),
    }
}

/// The app's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

fn create_tables(dialect: Dialect) -> Vec<&'static str> {
    match dialect {
        Dialect::Sqlite => vec![
            "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT, email VARCHAR(254) NOT NULL UNIQUE, \
             password_hash VARCHAR(255) NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id BIGINT NOT NULL REFERENCES users(id), \
             name VARCHAR(200) NOT NULL, quantity BIGINT NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS items_user_id ON items (user_id)",
        ],
        Dialect::Postgres => vec![
            "CREATE TABLE IF NOT EXISTS users (id BIGSERIAL PRIMARY KEY, email VARCHAR(254) NOT NULL UNIQUE, \
             password_hash VARCHAR(255) NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS items (id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id), \
             name VARCHAR(200) NOT NULL, quantity BIGINT NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS items_user_id ON items (user_id)",
        ],
        Dialect::MySql => vec![
            "CREATE TABLE IF NOT EXISTS users (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
             email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE, \
             password_hash VARCHAR(255) NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS items (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, \
             name VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, quantity BIGINT NOT NULL, created_at BIGINT NOT NULL, \
             INDEX items_user_id (user_id), FOREIGN KEY (user_id) REFERENCES users(id))",
        ],
    }
}

/// The app's schema changes, in order. Append only.
const MIGRATIONS: &[mooring_sql::Migration] = &[mooring_sql::Migration {
    version: 1,
    description: "create users and items",
    statements: create_tables,
}];

impl Db {
    /// Connects and creates the tables if they are missing. The migration runs under the same cross-process
    /// lock as the session store's, so replicas starting together do not race.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let pool = mooring_sql::connect(url).await?;
        let dialect = Dialect::from_url(url)?;
        mooring_sql::run_migrations(&pool, dialect, "inventory_schema_migrations", MIGRATIONS).await?;
        Ok(Self { pool, dialect })
    }

    /// The session revocation log ([`mooring_sql::SqlRevocationLog`]) on this database's pool, keeping each
    /// entry for `retention`. Brings the session schema (which holds `mooring_revocations`) up to date first,
    /// under the same migration lock.
    pub async fn revocation_log(
        &self,
        retention: std::time::Duration,
    ) -> Result<mooring_sql::SqlRevocationLog, DbError> {
        let store = mooring_sql::SqlStore::new(self.pool.clone())?;
        store.migrate().await?;
        Ok(store.revocations(retention))
    }

    fn q(&self, text: &'static str) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        sqlx::query(AssertSqlSafe(self.dialect.sql(text).into_owned()))
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.q("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Creates a user; `Ok(false)` if the email is taken.
    pub async fn create_user(&self, email: &str, password_hash: &str) -> Result<bool, DbError> {
        let result = self
            .q("INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)")
            .bind(email.to_owned())
            .bind(password_hash.to_owned())
            .bind(mooring::now_ms() as i64)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Finds a user by email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, DbError> {
        let row = self
            .q("SELECT id, email, password_hash FROM users WHERE email = ?")
            .bind(email.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(user_from_row))
    }

    /// Finds a user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, DbError> {
        let row = self
            .q("SELECT id, email, password_hash FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(user_from_row))
    }

    /// A user's items, newest first.
    pub async fn items(&self, user_id: i64) -> Result<Vec<Item>, DbError> {
        let rows = self
            .q("SELECT id, name, quantity, created_at FROM items WHERE user_id = ? ORDER BY id DESC")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Item {
                id: r.get(0),
                name: r.get(1),
                quantity: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    /// Adds an item.
    pub async fn add_item(&self, user_id: i64, name: &str, quantity: i64) -> Result<(), DbError> {
        self.q("INSERT INTO items (user_id, name, quantity, created_at) VALUES (?, ?, ?, ?)")
            .bind(user_id)
            .bind(name.to_owned())
            .bind(quantity)
            .bind(mooring::now_ms() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one of the user's items; `Ok(false)` if it is not theirs or does not exist.
    pub async fn delete_item(&self, user_id: i64, item_id: i64) -> Result<bool, DbError> {
        let done = self
            .q("DELETE FROM items WHERE id = ? AND user_id = ?")
            .bind(item_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
