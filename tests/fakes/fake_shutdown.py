"""``shutdown`` on a played EC2 instance (ec2_fake.Instance): records its arguments, and for ``-h now`` does what EC2
does when an instance's own OS powers off: terminates it if its InstanceInitiatedShutdownBehavior is ``terminate``,
else stops it
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingInstanceInitiatedShutdownBehavior.html).
A scheduled ``-h +N`` (the runtime cap) is only recorded: the tests move ftbroker's clock past it instead."""

import os
import sys

import boto3

args = sys.argv[1:]
with open(os.environ["FTB_FAKE_SHUTDOWN_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if "now" in args:
    ec2 = boto3.client("ec2")
    instance = os.environ["FTB_FAKE_INSTANCE"]
    behaviour = ec2.describe_instance_attribute(InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior")
    if behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate":
        ec2.terminate_instances(InstanceIds=[instance])
    else:
        ec2.stop_instances(InstanceIds=[instance])
