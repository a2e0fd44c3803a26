"""A support-ticket model: the domain the demo and the README tutorial classify."""

from django.db import models


class Ticket(models.Model):
    subject = models.CharField(max_length=200)
    body = models.TextField()
    label = models.CharField(max_length=32, blank=True, default="")

    def __str__(self) -> str:
        return self.subject
