//! Organizations and users. Names and emails are unique on the box, enforced by index trees
//! updated in the same transaction as the record; so are the rules that span accounts (an
//! organization keeps an admin). sled runs transactions one at a time, so a rule checked in
//! one cannot be raced.
//!
//! Indexes: `user_emails` (email → id), `org_members` (`<org>/<user>`, so an organization's
//! users are a prefix scan) and `org_admins` (org → its admins' ids, what the last-admin
//! rule reads inside the transaction that would break it). A change to an account is
//! announced on [`Store::account_changes`] once it is written.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Organization, Store, StoreError, User, abort, decode, encode, new_id, now_ms};
use crate::auth::Role;

/// What it takes to create a user; the password arrives already hashed.
pub struct NewUser<'a> {
    pub org_id: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub password_hash: String,
}

/// An account was deleted or its role changed: whoever acts on accounts (open sockets)
/// reads it again from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChanged {
    pub user_id: String,
    pub org_id: String,
}

/// Undelivered account changes kept per listener; a listener that falls further behind is
/// told it lagged and re-checks everything.
pub(super) const ACCOUNT_CHANGES_KEPT: usize = 1024;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn new_user(new: NewUser<'_>) -> User {
    User {
        id: new_id(),
        org_id: new.org_id.to_owned(),
        email: normalize_email(new.email),
        role: new.role,
        password_hash: new.password_hash,
        created_at: now_ms(),
    }
}

fn member_key(org_id: &str, user_id: &str) -> Vec<u8> {
    format!("{org_id}/{user_id}").into_bytes()
}

/// The admins of `org_id`, inside a transaction.
fn admins_in(admins: &TransactionalTree, org_id: &str) -> TxResult<Vec<String>> {
    match admins.get(org_id.as_bytes())? {
        Some(raw) => decode(&raw).or_else(abort),
        None => Ok(Vec::new()),
    }
}

fn write_admins(admins: &TransactionalTree, org_id: &str, ids: &[String]) -> TxResult<()> {
    if ids.is_empty() {
        admins.remove(org_id.as_bytes())?;
    } else {
        admins.insert(org_id.as_bytes(), encode(&ids).or_else(abort)?)?;
    }
    Ok(())
}

/// Takes `user_id` off the admins of `org_id`, unless it is the last one.
fn drop_admin(admins: &TransactionalTree, org_id: &str, user_id: &str) -> TxResult<()> {
    let mut ids = admins_in(admins, org_id)?;
    ids.retain(|id| id != user_id);
    if ids.is_empty() {
        return abort(StoreError::LastAdmin);
    }
    write_admins(admins, org_id, &ids)
}

/// The user `id`, inside a transaction, if they belong to `org_id`.
fn member_in(users: &TransactionalTree, org_id: &str, id: &str) -> TxResult<Option<User>> {
    let user = users.get(id.as_bytes())?.map(|raw| decode::<User>(&raw)).transpose().or_else(abort)?;
    Ok(user.filter(|user| user.org_id == org_id))
}

/// Fails unless `by` is an admin of `org_id` as of this transaction: a change to the
/// organization's users must not go through for someone demoted a moment before.
fn require_admin(users: &TransactionalTree, org_id: &str, by: &str) -> TxResult<()> {
    match member_in(users, org_id, by)? {
        Some(user) if user.role == Role::Admin => Ok(()),
        _ => abort(StoreError::NotAllowed),
    }
}

fn add_admin(admins: &TransactionalTree, org_id: &str, user_id: &str) -> TxResult<()> {
    let mut ids = admins_in(admins, org_id)?;
    if !ids.iter().any(|id| id == user_id) {
        ids.push(user_id.to_owned());
    }
    write_admins(admins, org_id, &ids)
}

impl Store {
    /// Creates an organization; its name must be new on this box.
    pub fn create_org(&self, name: &str) -> Result<Organization, StoreError> {
        let org = Organization { id: new_id(), name: name.trim().to_owned(), created_at: now_ms() };
        self.import_org(&org)?;
        Ok(org)
    }

    pub fn org(&self, id: &str) -> Result<Option<Organization>, StoreError> {
        self.orgs.get(id)?.map(|raw| decode(&raw)).transpose()
    }

    pub fn org_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        match self.org_names.get(name.trim().to_lowercase())? {
            Some(id) => self.org(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Creates an organization with the given record (a new one or one restored); its name
    /// must be new on this box.
    pub fn import_org(&self, org: &Organization) -> Result<(), StoreError> {
        self.writable()?;
        let record = encode(org)?;
        let key = org.name.to_lowercase();
        (&self.orgs, &self.org_names).transaction(|(orgs, names)| {
            if names.get(key.as_bytes())?.is_some() || orgs.get(org.id.as_bytes())?.is_some() {
                return abort(StoreError::Conflict("organization"));
            }
            names.insert(key.as_bytes(), org.id.as_bytes())?;
            orgs.insert(org.id.as_bytes(), record.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Creates a user on behalf of admin `by` of the same organization (checked in the same
    /// transaction, see [`Store::delete_user`]).
    pub fn create_user_by(&self, by: &str, new: NewUser<'_>) -> Result<User, StoreError> {
        let user = new_user(new);
        self.insert_user(&user, Some(by))?;
        Ok(user)
    }

    /// Creates a user (the first admin, or one made at the console); the email must be new.
    pub fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError> {
        let user = new_user(new);
        self.import_user(&user)?;
        Ok(user)
    }

    /// Stores a user under its own id (a new account, or one restored), with its indexes;
    /// its organization must exist and its email must be free.
    pub fn import_user(&self, user: &User) -> Result<(), StoreError> {
        self.insert_user(user, None)
    }

    fn insert_user(&self, user: &User, by: Option<&str>) -> Result<(), StoreError> {
        self.writable()?;
        if self.org(&user.org_id)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let user = &User { email: normalize_email(&user.email), ..user.clone() };
        let record = encode(user)?;
        let member = member_key(&user.org_id, &user.id);
        (&self.users, &self.user_emails, &self.org_members, &self.org_admins).transaction(
            |(users, emails, members, admins)| {
                if let Some(by) = by {
                    require_admin(users, &user.org_id, by)?;
                }
                if emails.get(user.email.as_bytes())?.is_some() {
                    return abort(StoreError::Conflict("user with this email"));
                }
                if users.get(user.id.as_bytes())?.is_some() {
                    return abort(StoreError::Conflict("user"));
                }
                emails.insert(user.email.as_bytes(), user.id.as_bytes())?;
                users.insert(user.id.as_bytes(), record.as_slice())?;
                members.insert(member.as_slice(), &[])?;
                if user.role == Role::Admin {
                    add_admin(admins, &user.org_id, &user.id)?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Whether any account exists (a box without one is waiting for its first admin).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.users.get(id)?.map(|raw| decode(&raw)).transpose()
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        match self.user_emails.get(normalize_email(email))? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// The users of one organization, oldest first (ids are ordered by creation).
    pub fn users_of(&self, org_id: &str) -> Result<Vec<User>, StoreError> {
        let mut users = Vec::new();
        for entry in self.org_members.scan_prefix(member_key(org_id, "")) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[org_id.len() + 1..]).into_owned();
            // The index and the record are written together; a missing record is skipped.
            users.extend(self.user(&id)?.filter(|user| user.org_id == org_id));
        }
        Ok(users)
    }

    /// Deletes a user of `org_id` on behalf of admin `by`; a user of another organization is
    /// `NotFound`, the organization's last admin [`StoreError::LastAdmin`], and `by` no
    /// longer being an admin of it [`StoreError::NotAllowed`].
    pub fn delete_user(&self, org_id: &str, by: &str, id: &str) -> Result<User, StoreError> {
        self.writable()?;
        let member = member_key(org_id, id);
        let user = (&self.users, &self.user_emails, &self.org_members, &self.org_admins).transaction(
            |(users, emails, members, admins)| {
                require_admin(users, org_id, by)?;
                let Some(user) = member_in(users, org_id, id)? else {
                    return abort(StoreError::NotFound);
                };
                if user.role == Role::Admin {
                    drop_admin(admins, org_id, id)?;
                }
                users.remove(id.as_bytes())?;
                emails.remove(user.email.as_bytes())?;
                members.remove(member.as_slice())?;
                Ok(user)
            },
        )?;
        self.announce_account(&user);
        Ok(user)
    }

    /// Gives a user of `org_id` another role on behalf of admin `by`; demoting the
    /// organization's last admin is [`StoreError::LastAdmin`] (see [`Store::delete_user`]).
    pub fn set_role(&self, org_id: &str, by: &str, id: &str, role: Role) -> Result<User, StoreError> {
        self.writable()?;
        let user = (&self.users, &self.org_admins).transaction(|(users, admins)| {
            require_admin(users, org_id, by)?;
            let Some(mut user) = member_in(users, org_id, id)? else {
                return abort(StoreError::NotFound);
            };
            match (user.role, role) {
                (Role::Admin, Role::Admin) => {}
                (Role::Admin, _) => drop_admin(admins, org_id, id)?,
                (_, Role::Admin) => add_admin(admins, org_id, id)?,
                _ => {}
            }
            user.role = role;
            users.insert(id.as_bytes(), encode(&user).or_else(abort)?)?;
            Ok(user)
        })?;
        self.announce_account(&user);
        Ok(user)
    }

    /// Admins of an organization.
    pub fn admin_count(&self, org_id: &str) -> Result<usize, StoreError> {
        match self.org_admins.get(org_id.as_bytes())? {
            Some(raw) => Ok(decode::<Vec<String>>(&raw)?.len()),
            None => Ok(0),
        }
    }

    /// Account changes as they are written (see [`AccountChanged`]).
    pub fn account_changes(&self) -> tokio::sync::broadcast::Receiver<AccountChanged> {
        self.account_changes.subscribe()
    }

    fn announce_account(&self, user: &User) {
        // No listener (the CLI, tests of the store) is fine.
        let _ = self.account_changes.send(AccountChanged { user_id: user.id.clone(), org_id: user.org_id.clone() });
    }

    /// Schema 3: builds the membership and admin indexes from the user records. Rebuilding
    /// from scratch keeps it idempotent.
    pub(super) fn index_accounts(&self) -> Result<(), StoreError> {
        let mut admins: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for entry in self.users.iter() {
            let user: User = decode(&entry?.1)?;
            self.org_members.insert(member_key(&user.org_id, &user.id), &[])?;
            if user.role == Role::Admin {
                admins.entry(user.org_id.clone()).or_default().push(user.id.clone());
            }
        }
        self.org_admins.clear()?;
        for (org, ids) in admins {
            self.org_admins.insert(org.as_bytes(), encode(&ids)?)?;
        }
        Ok(())
    }
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_org_names_are_unique_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.create_org("Acme").unwrap();
        assert!(matches!(store.create_org("acme "), Err(StoreError::Conflict(_))));
        let new = |email| NewUser { org_id: &org.id, email, role: Role::Editor, password_hash: "x".into() };
        let user = store.create_user(new("Ann@Example.com")).unwrap();
        assert_eq!(user.email, "ann@example.com");
        assert!(matches!(store.create_user(new("ann@example.COM")), Err(StoreError::Conflict(_))));
        assert_eq!(store.user_by_email(" ANN@example.com").unwrap().unwrap().id, user.id);
        let other = store.create_org("Other").unwrap();
        let boss = NewUser { org_id: &org.id, email: "boss@example.com", role: Role::Admin, password_hash: "x".into() };
        let boss = store.create_user(boss).unwrap();
        assert!(matches!(store.delete_user(&other.id, &boss.id, &user.id), Err(StoreError::NotAllowed)));
        assert!(
            matches!(store.delete_user(&org.id, &user.id, &boss.id), Err(StoreError::NotAllowed)),
            "editors may not"
        );
        store.delete_user(&org.id, &boss.id, &user.id).unwrap();
        assert!(store.user_by_email("ann@example.com").unwrap().is_none());
        store.create_user(new("ann@example.com")).expect("the email is free again");
    }

    #[test]
    fn an_organization_keeps_an_admin_even_under_concurrent_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let org = store.create_org("Acme").unwrap();
        let other = store.create_org("Globex").unwrap();
        let user = |org: &str, email: &str, role| {
            store.create_user(NewUser { org_id: org, email, role, password_hash: String::new() }).unwrap()
        };
        let lone = user(&other.id, "lone@globex", Role::Admin);
        assert!(matches!(store.set_role(&other.id, &lone.id, &lone.id, Role::Viewer), Err(StoreError::LastAdmin)));
        assert!(matches!(store.delete_user(&other.id, &lone.id, &lone.id), Err(StoreError::LastAdmin)));
        for round in 0..50 {
            let a = user(&org.id, &format!("a{round}@acme"), Role::Admin);
            let b = user(&org.id, &format!("b{round}@acme"), Role::Admin);
            // Everyone else of Acme is demoted, so a and b are its only admins.
            for admin in store
                .users_of(&org.id)
                .unwrap()
                .iter()
                .filter(|u| u.role == Role::Admin && u.id != a.id && u.id != b.id)
            {
                store.set_role(&org.id, &a.id, &admin.id, Role::Editor).unwrap();
            }
            let barrier = std::sync::Barrier::new(2);
            let demote = |(by, id): (&str, &str)| {
                barrier.wait();
                if round % 2 == 0 {
                    store.set_role(&org.id, by, id, Role::Viewer).is_ok()
                } else {
                    store.delete_user(&org.id, by, id).is_ok()
                }
            };
            let outcomes: Vec<bool> = std::thread::scope(|scope| {
                let demote = &demote;
                let (x, y) = (scope.spawn(|| demote((&b.id, &a.id))), scope.spawn(|| demote((&a.id, &b.id))));
                vec![x.join().unwrap(), y.join().unwrap()]
            });
            assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "round {round}: exactly one change goes through");
            let admins = store.users_of(&org.id).unwrap().into_iter().filter(|u| u.role == Role::Admin).count();
            assert_eq!((admins, store.admin_count(&org.id).unwrap()), (1, 1), "round {round}");
        }
        assert_eq!(store.users_of(&other.id).unwrap(), vec![lone], "another organization's users stay its own");
    }
}
