//! What an authenticated user does for themselves: their profile and password.
