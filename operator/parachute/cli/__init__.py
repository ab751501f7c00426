"""`kubectl parachute`: the plugin SREs and pipelines use to read and steer Rollouts.

The top layer of the package: it reads through the user's kubeconfig as kubectl does and acts
only through the spec and the annotations the operator honours, never by writing status. The
operator never imports it.
"""
