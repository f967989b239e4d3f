/* A pool as an ivshmem-plain device of a hypervisor VM (nested sibling). */
#ifndef PAGEMOVER_QMP_H
#define PAGEMOVER_QMP_H

#include <stdint.h>

#include "pool.h"

/*
 * Attach: object-add memory-backend-file (share=on, the pool's path) and
 * device_add ivshmem-plain on that memdev, through the VM's QMP socket.
 * Detach: device_del, wait for DEVICE_DELETED, object-del.
 * Both return 0 or -1 with err set; on a failed attach nothing is left.
 */
int pm_qmp_attach(const char *qmp_socket, const char *device_id,
                  const char *model, const char *mem_path, uint64_t size,
                  double timeout, struct pm_err *err);
int pm_qmp_detach(const char *qmp_socket, const char *device_id,
                  double timeout, struct pm_err *err);

#endif
