//! Organizations and users. Names and emails are unique on the box, enforced by index trees
//! updated in the same transaction as the record.

use sled::Transactional;

use super::{Organization, Store, StoreError, User, abort, decode, encode, new_id, now_ms};
use crate::auth::Role;

/// What it takes to create a user; the password arrives already hashed.
pub struct NewUser<'a> {
    pub org_id: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub password_hash: String,
}

impl Store {
    /// Creates an organization; its name must be new on this box.
    pub fn create_org(&self, name: &str) -> Result<Organization, StoreError> {
        self.writable()?;
        let org = Organization { id: new_id(), name: name.trim().to_owned(), created_at: now_ms() };
        let record = encode(&org)?;
        let key = org.name.to_lowercase();
        (&self.orgs, &self.org_names).transaction(|(orgs, names)| {
            if names.get(key.as_bytes())?.is_some() {
                return abort(StoreError::Conflict("organization"));
            }
            names.insert(key.as_bytes(), org.id.as_bytes())?;
            orgs.insert(org.id.as_bytes(), record.as_slice())?;
            Ok(())
        })?;
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

    /// Creates a user; the email must be new on this box.
    pub fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError> {
        self.writable()?;
        if self.org(new.org_id)?.is_none() {
            return Err(StoreError::NotFound);
        }
        let user = User {
            id: new_id(),
            org_id: new.org_id.to_owned(),
            email: normalize_email(new.email),
            role: new.role,
            password_hash: new.password_hash,
            created_at: now_ms(),
        };
        let record = encode(&user)?;
        (&self.users, &self.user_emails).transaction(|(users, emails)| {
            if emails.get(user.email.as_bytes())?.is_some() {
                return abort(StoreError::Conflict("user with this email"));
            }
            emails.insert(user.email.as_bytes(), user.id.as_bytes())?;
            users.insert(user.id.as_bytes(), record.as_slice())?;
            Ok(())
        })?;
        Ok(user)
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

    /// The users of one organization, oldest first.
    pub fn users_of(&self, org_id: &str) -> Result<Vec<User>, StoreError> {
        let mut users = Vec::new();
        for entry in self.users.iter() {
            let user: User = decode(&entry?.1)?;
            if user.org_id == org_id {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Deletes a user of `org_id`; a user of another organization is `NotFound`.
    pub fn delete_user(&self, org_id: &str, id: &str) -> Result<User, StoreError> {
        self.writable()?;
        let user = self.user(id)?.filter(|u| u.org_id == org_id).ok_or(StoreError::NotFound)?;
        (&self.users, &self.user_emails).transaction(|(users, emails)| {
            users.remove(user.id.as_bytes())?;
            emails.remove(user.email.as_bytes())?;
            Ok(())
        })?;
        Ok(user)
    }

    pub fn set_role(&self, org_id: &str, id: &str, role: Role) -> Result<User, StoreError> {
        self.writable()?;
        let mut user = self.user(id)?.filter(|u| u.org_id == org_id).ok_or(StoreError::NotFound)?;
        user.role = role;
        self.users.insert(user.id.as_bytes(), encode(&user)?)?;
        Ok(user)
    }

    /// Admins of an organization, to keep at least one.
    pub fn admin_count(&self, org_id: &str) -> Result<usize, StoreError> {
        Ok(self.users_of(org_id)?.iter().filter(|u| u.role == Role::Admin).count())
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
        let new = |email| NewUser { org_id: &org.id, email, role: Role::Admin, password_hash: "x".into() };
        let user = store.create_user(new("Ann@Example.com")).unwrap();
        assert_eq!(user.email, "ann@example.com");
        assert!(matches!(store.create_user(new("ann@example.COM")), Err(StoreError::Conflict(_))));
        assert_eq!(store.user_by_email(" ANN@example.com").unwrap().unwrap().id, user.id);
        let other = store.create_org("Other").unwrap();
        assert!(matches!(store.delete_user(&other.id, &user.id), Err(StoreError::NotFound)));
        store.delete_user(&org.id, &user.id).unwrap();
        assert!(store.user_by_email("ann@example.com").unwrap().is_none());
        store.create_user(new("ann@example.com")).expect("the email is free again");
    }
}
