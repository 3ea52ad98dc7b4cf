"""Interfaces to other tools' outputs (nilearn's ``nilearn.interfaces``)."""
