"""Model groups: the named models a recipe generates, scores and trains with, in one process or
behind Ray actors (the Ray side lives in actors/); the interface is :mod:`coalition.groups.group`."""
