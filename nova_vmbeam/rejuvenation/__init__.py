"""Host rejuvenation: the orchestrator, its parts and its on-disk journal.

Words, each for one thing:

generation
    one running instance of the hypervisor stack on this node, numbered
    1, 2, ...; exactly one is active. The orchestrator and the journal
    speak of generations (records.Generation, Run.source/Run.target).
sibling
    the plugin kind that makes generations (nova_vmbeam.siblings:
    colocated, nested), and the plugin's object for one generation
    (Orchestrator.sibling(number)): how to start, reach and retire it.
prepared destination
    a destination QEMU started ahead of a run (by standby) for one guest,
    paused and waiting for its migration (records.PreparedDestination).

The path of a request: orchestrator (facade) -> planning -> runs ->
generations (sibling plugin) -> moves (mover plugin) -> journal -> the
run's records.Run as the report.
"""
