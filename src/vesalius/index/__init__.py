"""The SQL index: SQLAlchemy Core over SQLite (default) or PostgreSQL."""
