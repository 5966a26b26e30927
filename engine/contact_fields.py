"""The contact's own columns: the fields a contact has besides its free-form attributes.

Pure and import-free, so the CSV import, the template context and the expander agree on
one list. A template names them directly; they win over attributes and campaign vars.
"""

from __future__ import annotations

#: the contact columns a template can name (``attributes`` and ``vars`` fill the rest)
CONTACT_FIELDS = ("phone", "first_name", "last_name", "locale", "timezone")
